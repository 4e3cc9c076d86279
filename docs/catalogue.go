package docs

import (
	"bufio"
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
)

//go:embed metrics.md
var metricsMD []byte

// Metric types a catalogue row may declare.
const (
	TypeCounter   = "counter"
	TypeGauge     = "gauge"
	TypeHistogram = "histogram"
	TypeSummary   = "summary"
	// TypeVarious marks a family whose members have different types.
	TypeVarious = "various"
)

// ErrNoMetrics is returned when a document has no catalogue table.
var ErrNoMetrics = errors.New("no metric table found")

var (
	// metricNameRE is a classic (non-UTF-8) Prometheus metric name.
	metricNameRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelNameRE  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	// placeholderRE is a <fragment> in a documented name.
	placeholderRE = regexp.MustCompile(`<[a-z][a-z0-9_]*>`)
)

// catalogueHeader is the header row that marks a table as part of the catalogue.
var catalogueHeader = []string{"name", "type", "labels", "meaning"}

// Metric is one row of the catalogue.
type Metric struct {
	// Name is the documented name. It may contain <placeholder> fragments or
	// end in "*" (a family); see Matches.
	Name    string
	Type    string
	Labels  []string
	Meaning string
	// Line is the 1-based line of the row in the source document.
	Line int

	re *regexp.Regexp // nil for a literal name
}

// IsPattern reports whether the row documents a pattern or family rather than
// one literal name.
func (m Metric) IsPattern() bool { return m.re != nil }

// Matches reports whether name is the documented name or, for a pattern,
// matches it: a <placeholder> stands for one or more name characters and a
// trailing "*" for any suffix.
func (m Metric) Matches(name string) bool {
	if m.re == nil {
		return m.Name == name
	}
	return m.re.MatchString(name)
}

// Example returns a concrete metric name the row covers, with placeholders
// replaced by "example" and a trailing "*" by "example".
func (m Metric) Example() string {
	return strings.ReplaceAll(placeholderRE.ReplaceAllString(m.Name, "example"), "*", "example")
}

// Catalogue is the parsed metric catalogue.
type Catalogue struct {
	metrics []Metric
}

// Load parses the catalogue embedded from metrics.md.
func Load() (*Catalogue, error) {
	c, err := Parse(bytes.NewReader(metricsMD))
	if err != nil {
		return nil, fmt.Errorf("metrics.md: %w", err)
	}
	return c, nil
}

// Parse reads a markdown document and returns the metrics of every table whose
// header is "| name | type | labels | meaning |". Names must be unique.
func Parse(r io.Reader) (*Catalogue, error) {
	var (
		c       Catalogue
		seen    = map[string]int{}
		inTable bool
		lineNo  int
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "|") {
			inTable = false
			continue
		}
		cells := splitRow(line)
		if !inTable {
			if isCatalogueHeader(cells) {
				inTable = true
				if !sc.Scan() {
					return nil, fmt.Errorf("line %d: table header without a delimiter row", lineNo)
				}
				lineNo++
				if !isDelimiterRow(splitRow(strings.TrimSpace(sc.Text()))) {
					return nil, fmt.Errorf("line %d: table header not followed by a delimiter row", lineNo)
				}
			}
			continue
		}
		m, err := parseRow(cells)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", lineNo, err)
		}
		m.Line = lineNo
		if prev, ok := seen[m.Name]; ok {
			return nil, fmt.Errorf("line %d: name: %q already documented on line %d", lineNo, m.Name, prev)
		}
		seen[m.Name] = lineNo
		c.metrics = append(c.metrics, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read catalogue: %w", err)
	}
	if len(c.metrics) == 0 {
		return nil, ErrNoMetrics
	}
	return &c, nil
}

// Metrics returns the rows in document order.
func (c *Catalogue) Metrics() []Metric { return slices.Clone(c.metrics) }

// Lookup returns the row that documents a metric name as it appears in a
// query. Literal rows win over patterns. A histogram row also documents the
// name's _bucket, _count and _sum series, a summary row its _count and _sum.
func (c *Catalogue) Lookup(name string) (Metric, bool) {
	if m, ok := c.match(name); ok {
		return m, true
	}
	for _, suffix := range []string{"_bucket", "_count", "_sum"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		m, ok := c.match(base)
		if !ok {
			continue
		}
		if m.Type == TypeHistogram || (m.Type == TypeSummary && suffix != "_bucket") {
			return m, true
		}
	}
	return Metric{}, false
}

func (c *Catalogue) match(name string) (Metric, bool) {
	for _, m := range c.metrics {
		if m.re == nil && m.Name == name {
			return m, true
		}
	}
	for _, m := range c.metrics {
		if m.re != nil && m.re.MatchString(name) {
			return m, true
		}
	}
	return Metric{}, false
}

func parseRow(cells []string) (Metric, error) {
	if len(cells) != len(catalogueHeader) {
		return Metric{}, fmt.Errorf("want %d cells, got %d", len(catalogueHeader), len(cells))
	}
	name, ok := unquote(cells[0])
	if !ok {
		return Metric{}, fmt.Errorf("name: %q is not a single name in backticks", cells[0])
	}
	m := Metric{Name: name, Type: cells[1], Meaning: cells[3]}
	re, err := namePattern(name)
	if err != nil {
		return Metric{}, fmt.Errorf("name: %w", err)
	}
	m.re = re
	switch m.Type {
	case TypeCounter, TypeGauge, TypeHistogram, TypeSummary:
	case TypeVarious:
		if !strings.HasSuffix(name, "*") {
			return Metric{}, fmt.Errorf("type: %q is only for a family (name ending in *), not %q", m.Type, name)
		}
	default:
		return Metric{}, fmt.Errorf("type: unknown metric type %q", m.Type)
	}
	labels, err := parseLabels(cells[2])
	if err != nil {
		return Metric{}, fmt.Errorf("labels: %w", err)
	}
	m.Labels = labels
	if m.Meaning == "" {
		return Metric{}, fmt.Errorf("meaning: empty for %q", name)
	}
	return m, nil
}

// namePattern validates a documented name and returns the regexp for a
// pattern, or nil for a literal name.
func namePattern(name string) (*regexp.Regexp, error) {
	family := strings.HasSuffix(name, "*")
	body := strings.TrimSuffix(name, "*")
	literal := placeholderRE.ReplaceAllString(body, "x")
	if strings.ContainsAny(literal, "<>*") || !metricNameRE.MatchString(literal) {
		return nil, fmt.Errorf("%q is not a valid metric name or pattern", name)
	}
	if !family && literal == body {
		return nil, nil
	}
	var sb strings.Builder
	sb.WriteString("^")
	rest := body
	for {
		loc := placeholderRE.FindStringIndex(rest)
		if loc == nil {
			sb.WriteString(regexp.QuoteMeta(rest))
			break
		}
		sb.WriteString(regexp.QuoteMeta(rest[:loc[0]]))
		sb.WriteString(`[a-zA-Z0-9_:]+`)
		rest = rest[loc[1]:]
	}
	if family {
		sb.WriteString(`[a-zA-Z0-9_:]*`)
	}
	sb.WriteString("$")
	return regexp.MustCompile(sb.String()), nil
}

func parseLabels(cell string) ([]string, error) {
	switch cell {
	case "—", "-", "":
		return nil, nil
	}
	var labels []string
	for _, part := range strings.Split(cell, ",") {
		l, ok := unquote(strings.TrimSpace(part))
		if !ok || !labelNameRE.MatchString(l) {
			return nil, fmt.Errorf("%q is not a label name in backticks", strings.TrimSpace(part))
		}
		if slices.Contains(labels, l) {
			return nil, fmt.Errorf("label %q listed twice", l)
		}
		labels = append(labels, l)
	}
	return labels, nil
}

// unquote returns the text of a cell that is exactly one `code span`.
func unquote(cell string) (string, bool) {
	if len(cell) < 3 || cell[0] != '`' || cell[len(cell)-1] != '`' {
		return "", false
	}
	s := cell[1 : len(cell)-1]
	if strings.Contains(s, "`") {
		return "", false
	}
	return s, true
}

// splitRow splits a markdown table row into trimmed cells, honouring \| escapes.
func splitRow(line string) []string {
	line = strings.TrimPrefix(line, "|")
	if strings.HasSuffix(line, "|") && !strings.HasSuffix(line, `\|`) {
		line = strings.TrimSuffix(line, "|")
	}
	var (
		cells []string
		cur   strings.Builder
	)
	for i := 0; i < len(line); i++ {
		switch {
		case line[i] == '\\' && i+1 < len(line) && line[i+1] == '|':
			cur.WriteByte('|')
			i++
		case line[i] == '|':
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
		default:
			cur.WriteByte(line[i])
		}
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

func isCatalogueHeader(cells []string) bool {
	if len(cells) != len(catalogueHeader) {
		return false
	}
	for i, c := range cells {
		if strings.ToLower(c) != catalogueHeader[i] {
			return false
		}
	}
	return true
}

func isDelimiterRow(cells []string) bool {
	for _, c := range cells {
		c = strings.Trim(c, ":")
		if c == "" || strings.Trim(c, "-") != "" {
			return false
		}
	}
	return len(cells) > 0
}
