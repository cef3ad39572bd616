package kernfs

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/sever-dev/sever"
)

// Int accepts an integer in [min, max], written in decimal, or in hex,
// octal or binary with a 0x, 0 or 0b prefix (kstrtoll with base 0); Store
// receives an int64.
func Int(min, max int64) Parser {
	return func(s string) (any, error) {
		v, err := strconv.ParseInt(s, 0, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer: %w", s, sever.ErrInvalid)
		}
		if v < min || v > max {
			return nil, fmt.Errorf("%d is out of range [%d, %d]: %w", v, min, max, sever.ErrInvalid)
		}
		return v, nil
	}
}

// Bool accepts 1, y, yes, on, true and 0, n, no, off, false, in any case
// (kstrtobool); Store receives a bool.
func Bool() Parser {
	return func(s string) (any, error) {
		switch strings.ToLower(s) {
		case "1", "y", "yes", "on", "true":
			return true, nil
		case "0", "n", "no", "off", "false":
			return false, nil
		}
		return nil, fmt.Errorf("%q is not a boolean: %w", s, sever.ErrInvalid)
	}
}

// Enum accepts exactly one of values (case-sensitive, as sysfs_match_string);
// Store receives the string.
func Enum(values ...string) Parser {
	vs := slices.Clone(values)
	return func(s string) (any, error) {
		if slices.Contains(vs, s) {
			return s, nil
		}
		return nil, fmt.Errorf("%q is not one of %s: %w", s, strings.Join(vs, ", "), sever.ErrInvalid)
	}
}

// String accepts a string of at most maxLen bytes without NUL bytes;
// Store receives the string.
func String(maxLen int) Parser {
	return func(s string) (any, error) {
		if len(s) > maxLen {
			return nil, fmt.Errorf("string of %d bytes, more than %d: %w", len(s), maxLen, sever.ErrInvalid)
		}
		if strings.IndexByte(s, 0) >= 0 {
			return nil, fmt.Errorf("string contains NUL: %w", sever.ErrInvalid)
		}
		return s, nil
	}
}
