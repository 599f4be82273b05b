// Package bytesize is the byte-count type of the configuration: YAML and
// overrides accept an integer or a number with a unit (64KiB, 1 GiB, 10MB).
// It is a leaf package so that component configs (broker.Config, ...) can
// carry YAML-decodable sizes without importing gateway/config.
package bytesize

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ErrSize means a size does not parse or is out of range.
var ErrSize = errors.New("invalid size")

// Size is a size in bytes; YAML accepts an integer or a string with a unit
// suffix: B, KiB, MiB, GiB, TiB (also KB, MB, GB, TB as powers of 1000).
type Size int64

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := Parse(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// Parse parses "1048576", "64KiB", "1 GiB", "10MB".
func Parse(s string) (Size, error) {
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			mult = u.mult
			s = strings.TrimSpace(strings.TrimSuffix(s, u.suffix))
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%w: %q", ErrSize, s)
	}
	return Size(n * mult), nil
}
