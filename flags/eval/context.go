package eval

import (
	"encoding/json"
	"time"
)

// flagdKey is the evaluation-context property flagd injects.
const flagdKey = "$flagd"

// normalize converts evaluation-context values to the JSON value types
// JsonLogic works on (nil, bool, float64, string, []any, map[string]any),
// as flagd does by round-tripping the context through JSON. Common Go types
// are converted directly; anything else goes through encoding/json.
func normalize(v any) any {
	switch x := v.(type) {
	case nil, bool, string, float64:
		return x
	case int:
		return float64(x)
	case int8:
		return float64(x)
	case int16:
		return float64(x)
	case int32:
		return float64(x)
	case int64:
		return float64(x)
	case uint:
		return float64(x)
	case uint8:
		return float64(x)
	case uint16:
		return float64(x)
	case uint32:
		return float64(x)
	case uint64:
		return float64(x)
	case float32:
		return float64(x)
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return x.String()
		}
		return f
	case time.Time:
		return x.Format(time.RFC3339Nano)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case []string:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = e
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	case map[string]string:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = e
		}
		return out
	default:
		raw, err := json.Marshal(x)
		if err != nil {
			return nil
		}
		var out any
		if err := json.Unmarshal(raw, &out); err != nil {
			return nil
		}
		return out
	}
}

// evaluationData builds the JsonLogic data for one evaluation: a
// normalized copy of the context plus flagd's "$flagd" properties.
func evaluationData(flagKey string, evalCtx map[string]any, now time.Time) map[string]any {
	data := make(map[string]any, len(evalCtx)+1)
	for k, v := range evalCtx {
		data[k] = normalize(v)
	}
	data[flagdKey] = map[string]any{
		"flagKey":   flagKey,
		"timestamp": float64(now.Unix()),
	}
	return data
}
