package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// applyConfigFile sets every flag of fs that was not given on the command
// line from the YAML file at path. The file is a mapping whose keys are the
// flag names (without "--"); a repeatable flag takes a sequence. Unknown
// keys and bad values are rejected with the file, line and reason. Flags
// given on the command line win over the file.
func applyConfigFile(fs *pflag.FlagSet, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file sets nothing
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		line := more.Line
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		return fmt.Errorf("%s:%d: a second YAML document (after ---): the configuration is one mapping", path, line)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: the configuration must be a mapping of flag names to values", path, m.Line)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		fl := fs.Lookup(k.Value)
		if fl == nil || k.Value == "config" || fl.Hidden {
			return fmt.Errorf("%s:%d: unknown key %q", path, k.Line, k.Value)
		}
		if seen[k.Value] {
			return fmt.Errorf("%s:%d: key %q given twice", path, k.Line, k.Value)
		}
		seen[k.Value] = true
		if fl.Changed {
			continue // the command line wins
		}
		if err := setFlagFromNode(fl, v); err != nil {
			return fmt.Errorf("%s:%d: %s: %w", path, v.Line, k.Value, err)
		}
	}
	return nil
}

func setFlagFromNode(fl *pflag.Flag, v *yaml.Node) error {
	sv, isSlice := fl.Value.(pflag.SliceValue)
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			// "key:", "key: ~" or "key: null" would set the literal text.
			return errors.New("no value: give one, or remove the key")
		}
		if isSlice {
			return sv.Replace([]string{v.Value})
		}
		return fl.Value.Set(v.Value)
	case yaml.SequenceNode:
		if !isSlice {
			return fmt.Errorf("takes one value, not a list")
		}
		vals := make([]string, 0, len(v.Content))
		for _, e := range v.Content {
			if e.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: list items must be plain values", e.Line)
			}
			vals = append(vals, e.Value)
		}
		return sv.Replace(vals)
	default:
		return fmt.Errorf("expected a value%s", map[bool]string{true: " or a list", false: ""}[isSlice])
	}
}
