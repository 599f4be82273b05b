package svc

import (
	"bytes"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

// DecodeYAML strictly decodes b into v: unknown keys are errors.
func DecodeYAML(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	return dec.Decode(v)
}

// LoadYAML reads path and strictly decodes it into v. A file that does not
// decode gives an error wrapping ErrInvalid and naming the file; a file that
// cannot be read gives the os error as is.
func LoadYAML(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := DecodeYAML(b, v); err != nil {
		return fmt.Errorf("%s: %w: %w", path, ErrInvalid, err)
	}
	return nil
}
