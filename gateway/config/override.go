package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// EnvPrefix starts every environment override.
const EnvPrefix = "TELEGATE_"

var (
	durationType = reflect.TypeFor[time.Duration]()
	byteSizeType = reflect.TypeFor[ByteSize]()
)

// Set assigns value to the field named by a dotted YAML path such as
// "influx.url" or "mqtt.max_packet_size".
func Set(cfg *Config, path, value string) error {
	f, err := field(reflect.ValueOf(cfg).Elem(), strings.Split(path, "."))
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadOverride, path, err)
	}
	if err := assign(f, value); err != nil {
		return fmt.Errorf("%w: %s=%q: %w", ErrBadOverride, path, value, err)
	}
	return nil
}

// Keys lists every settable dotted path (for docs and -help).
func Keys() []string {
	var out []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := range t.NumField() {
			sf := t.Field(i)
			name := prefix + sf.Tag.Get("yaml")
			if sf.Type.Kind() == reflect.Struct && sf.Type != durationType {
				walk(sf.Type, name+".")
				continue
			}
			out = append(out, name)
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return out
}

// setByEnv maps INFLUX_LOCAL_HTTP_ADDR to the matching dotted key. Keys are
// matched against Keys() because YAML names contain underscores too.
func setByEnv(cfg *Config, name, value string) error {
	want := strings.ToUpper(name)
	for _, k := range Keys() {
		if strings.ToUpper(strings.ReplaceAll(k, ".", "_")) == want {
			return Set(cfg, k, value)
		}
	}
	return fmt.Errorf("%w: no key matches %s%s", ErrUnknownKey, EnvPrefix, name)
}

func field(v reflect.Value, path []string) (reflect.Value, error) {
	for _, name := range path {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, fmt.Errorf("%w: %s is not a section", ErrUnknownKey, name)
		}
		found := false
		for i := range v.NumField() {
			if v.Type().Field(i).Tag.Get("yaml") == name {
				v = v.Field(i)
				found = true
				break
			}
		}
		if !found {
			return reflect.Value{}, fmt.Errorf("%w: %s", ErrUnknownKey, name)
		}
	}
	if v.Kind() == reflect.Struct && v.Type() != durationType {
		return reflect.Value{}, fmt.Errorf("%w: is a section, not a value", ErrUnknownKey)
	}
	return v, nil
}

func assign(f reflect.Value, s string) error {
	switch {
	case f.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		f.SetInt(int64(d))
	case f.Type() == byteSizeType:
		b, err := ParseByteSize(s)
		if err != nil {
			return err
		}
		f.SetInt(int64(b))
	case f.Kind() == reflect.String:
		f.SetString(s)
	case f.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		f.SetBool(b)
	case f.Kind() == reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		f.SetInt(int64(n))
	case f.Kind() == reflect.Slice && f.Type().Elem().Kind() == reflect.String:
		var items []string
		for _, it := range strings.Split(s, ",") {
			if it = strings.TrimSpace(it); it != "" {
				items = append(items, it)
			}
		}
		f.Set(reflect.ValueOf(items).Convert(f.Type()))
	case f.Kind() == reflect.Float64:
		x, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return err
		}
		f.SetFloat(x)
	default:
		return fmt.Errorf("unsupported kind %s", f.Kind())
	}
	return nil
}

func reflectValue(c *Config) reflect.Value { return reflect.ValueOf(c).Elem() }

func splitKey(k string) []string { return strings.Split(k, ".") }
