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
			name, inline, ok := yamlName(sf)
			switch {
			case !ok:
			case inline:
				walk(sf.Type, prefix)
			case isSection(sf.Type):
				walk(sf.Type, prefix+name+".")
			default:
				out = append(out, prefix+name)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "")
	return out
}

// yamlName is the YAML key of a struct field; inline is true for an
// embedded struct whose keys belong to the enclosing section (`,inline`);
// ok is false for fields YAML cannot reach (unexported, or tagged "-").
func yamlName(sf reflect.StructField) (name string, inline, ok bool) {
	tag, opts, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
	if !sf.IsExported() || tag == "-" {
		return "", false, false
	}
	if opts == "inline" {
		return "", true, true
	}
	if tag == "" {
		tag = strings.ToLower(sf.Name)
	}
	return tag, false, true
}

// isSection: a struct type other than the ones decoded from one scalar.
func isSection(t reflect.Type) bool { return t.Kind() == reflect.Struct && t != durationType }

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

// field finds the value at path (YAML keys), looking through inline structs.
func field(v reflect.Value, path []string) (reflect.Value, error) {
	for _, name := range path {
		if !isSection(v.Type()) {
			return reflect.Value{}, fmt.Errorf("%w: %s is not a section", ErrUnknownKey, name)
		}
		f, ok := child(v, name)
		if !ok {
			return reflect.Value{}, fmt.Errorf("%w: %s", ErrUnknownKey, name)
		}
		v = f
	}
	if isSection(v.Type()) {
		return reflect.Value{}, fmt.Errorf("%w: is a section, not a value", ErrUnknownKey)
	}
	return v, nil
}

// child is the field of struct v whose YAML key is name.
func child(v reflect.Value, name string) (reflect.Value, bool) {
	for i := range v.NumField() {
		key, inline, ok := yamlName(v.Type().Field(i))
		switch {
		case !ok:
		case inline:
			if f, found := child(v.Field(i), name); found {
				return f, true
			}
		case key == name:
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// assign parses s by f's type (duration, size, string, bool, int/uint of
// any width with range check, float, comma-separated list) and stores it.
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
	case f.CanInt():
		n, err := strconv.ParseInt(s, 10, f.Type().Bits())
		if err != nil {
			return err
		}
		f.SetInt(n)
	case f.CanUint():
		n, err := strconv.ParseUint(s, 10, f.Type().Bits())
		if err != nil {
			return err
		}
		f.SetUint(n)
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

// reflectValue is the addressable struct value of c (for field).
func reflectValue(c *Config) reflect.Value { return reflect.ValueOf(c).Elem() }

// splitKey splits a dotted key into its YAML path.
func splitKey(k string) []string { return strings.Split(k, ".") }
