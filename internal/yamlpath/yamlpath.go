// Package yamlpath decodes YAML strictly and, when decoding fails inside a
// custom unmarshaler (a duration, a URL), says at which field and line: the
// errors of yaml.v3 carry a position only for its own type errors.
package yamlpath

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// Decode decodes b into v with unknown fields refused. An error names the
// field path and line where it can be found, e.g.
// "line 3: evaluation_interval: not a valid duration string".
func Decode(b []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	err := dec.Decode(v)
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		return err // positioned already
	}
	var root yaml.Node
	if yaml.Unmarshal(b, &root) != nil || len(root.Content) == 0 {
		return err
	}
	if where := locate(root.Content[0], reflect.TypeOf(v).Elem(), ""); where != "" {
		return fmt.Errorf("%s: %w", where, err)
	}
	return err
}

// locate returns "line N: path" of the first node that does not decode
// into its field's type, descending structs, slices and maps.
func locate(n *yaml.Node, t reflect.Type, path string) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) || n.Kind == yaml.ScalarNode {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			return fmt.Sprintf("line %d: %s", n.Line, strings.TrimPrefix(path, "."))
		}
		return ""
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := map[string]reflect.Type{}
		collect(t, fields)
		for i := 0; i+1 < len(n.Content); i += 2 {
			ft, ok := fields[n.Content[i].Value]
			if !ok {
				continue
			}
			if w := locate(n.Content[i+1], ft, path+"."+n.Content[i].Value); w != "" {
				return w
			}
		}
	case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && n.Kind == yaml.SequenceNode:
		for i, c := range n.Content {
			if w := locate(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); w != "" {
				return w
			}
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if w := locate(n.Content[i+1], t.Elem(), path+"."+n.Content[i].Value); w != "" {
				return w
			}
		}
	}
	return ""
}

// collect maps the YAML keys of t's fields, inlined structs included, to
// their types.
func collect(t reflect.Type, into map[string]reflect.Type) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if strings.Contains(","+opts+",", ",inline,") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				collect(ft, into)
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		into[name] = f.Type
	}
}
