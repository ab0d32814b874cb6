package main

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/tapswitch/tapswitch/internal/regfile"
)

// maxConfigSize bounds a --config file, far above any real one.
const maxConfigSize = 1 << 20

// applyConfigFile sets every flag of fs that was not given on the command
// line from the YAML file at path. The file is a mapping whose keys are the
// flag names (without "--"); a repeatable flag takes a sequence. Unknown
// keys and bad values are rejected with the file, line and reason. Flags
// given on the command line win over the file. The lines returned say
// where the file set each flag, for errors found later (configLines.locate).
func applyConfigFile(fs *pflag.FlagSet, path string) (configLines, error) {
	lines := configLines{path: path, line: map[string]int{}}
	data, err := regfile.Read(path, maxConfigSize)
	if err != nil {
		return lines, fmt.Errorf("config: %w", err)
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return lines, nil // an empty file sets nothing
		}
		return lines, fmt.Errorf("%s: %w", path, err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		line := more.Line
		if err != nil {
			return lines, fmt.Errorf("%s: %w", path, err)
		}
		return lines, fmt.Errorf("%s:%d: a second YAML document (after ---): the configuration is one mapping", path, line)
	}
	if len(doc.Content) == 0 {
		return lines, nil
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return lines, fmt.Errorf("%s:%d: the configuration must be a mapping of flag names to values", path, m.Line)
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		fl := fs.Lookup(k.Value)
		// help is cobra's flag on serve's set, not in a reload's fresh
		// one: refused as config is, it is refused alike at start and on
		// SIGHUP.
		if fl == nil || k.Value == "config" || k.Value == "help" || fl.Hidden {
			return lines, fmt.Errorf("%s:%d: unknown key %q", path, k.Line, k.Value)
		}
		if _, dup := lines.line[k.Value]; dup {
			return lines, fmt.Errorf("%s:%d: key %q given twice", path, k.Line, k.Value)
		}
		lines.line[k.Value] = 0
		if fl.Changed {
			continue // the command line wins
		}
		if err := setFlagFromNode(fl, v); err != nil {
			return lines, fmt.Errorf("%s:%d: %s: %w", path, v.Line, k.Value, err)
		}
		lines.line[k.Value] = k.Line
	}
	return lines, nil
}

// configLines records the line of the configuration file at path that set
// each flag (0: the command line's value won).
type configLines struct {
	path string
	line map[string]int
}

// locate puts the file and line in front of err when err is about one flag
// ("--name ..." or "--name: ...") that the file set, so that an error found
// after the file was read (a bad address, a range outside the subnet, a
// socket in use) points at the line to change.
func (c configLines) locate(err error) error {
	msg := err.Error()
	if !strings.HasPrefix(msg, "--") {
		return err
	}
	name, _, _ := strings.Cut(msg[2:], " ")
	if line := c.line[strings.TrimSuffix(name, ":")]; line > 0 {
		return fmt.Errorf("%s:%d: %w", c.path, line, err)
	}
	return err
}

// numberKinds names what a flag of each pflag type parsed by strconv
// takes (list flags: what each item takes).
var numberKinds = map[string]string{"bool": "true or false", "int": "a whole number", "intSlice": "a whole number", "float64": "a number"}

// valueError rewords a value that flag fl's parser refused: not the
// parser's "strconv.ParseBool: parsing ...".
func valueError(fl *pflag.Flag, err error) error {
	ne := (*strconv.NumError)(nil)
	switch {
	case err == nil || !errors.As(err, &ne):
		return err
	case errors.Is(ne.Err, strconv.ErrRange):
		return fmt.Errorf("%q is out of range", ne.Num)
	default:
		return fmt.Errorf("%q is not %s", ne.Num, cmp.Or(numberKinds[fl.Value.Type()], "a "+fl.Value.Type()))
	}
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
			return valueError(fl, sv.Replace([]string{v.Value}))
		}
		return valueError(fl, fl.Value.Set(v.Value))
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
		return valueError(fl, sv.Replace(vals))
	default:
		return fmt.Errorf("expected a value%s", map[bool]string{true: " or a list", false: ""}[isSlice])
	}
}
