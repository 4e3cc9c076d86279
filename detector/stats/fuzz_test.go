package stats

import (
	"encoding/binary"
	"math"
	"testing"
	"time"
)

// floats decodes b into float64s, so the fuzzer reaches NaN, ±Inf,
// subnormals and huge values.
func floats(b []byte) []float64 {
	out := make([]float64, 0, len(b)/8)
	for len(b) >= 8 {
		out = append(out, math.Float64frombits(binary.LittleEndian.Uint64(b)))
		b = b[8:]
	}
	return out
}

func encode(v ...float64) []byte {
	b := make([]byte, 0, 8*len(v))
	for _, f := range v {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
	}
	return b
}

func FuzzRatios(f *testing.F) {
	f.Add(20.0, 100.0, 10.0, 100.0, 0.95)
	f.Add(0.0, 0.0, 0.0, 0.0, 0.5)
	f.Add(math.NaN(), math.Inf(1), -1.0, 1e308, 1.0)
	f.Add(1e-300, 1e-300, 5e-324, 1.0, 0.999999)
	f.Fuzz(func(t *testing.T, x1, n1, x0, n0, conf float64) {
		for name, fn := range map[string]func(float64, float64, float64, float64, float64) (Ratio, error){
			"RiskRatio": RiskRatio, "RateRatio": RateRatio,
		} {
			r, err := fn(x1, n1, x0, n0, conf)
			if err != nil {
				continue
			}
			if math.IsNaN(r.Estimate) || math.IsNaN(r.Lower) || math.IsNaN(r.Upper) {
				t.Fatalf("%s(%v,%v,%v,%v,%v) = %+v has NaN", name, x1, n1, x0, n0, conf, r)
			}
			if !(r.Lower <= r.Estimate && r.Estimate <= r.Upper) {
				t.Fatalf("%s(%v,%v,%v,%v,%v) = %+v: interval does not contain the estimate", name, x1, n1, x0, n0, conf, r)
			}
			w := r.Widen(x1)
			if w.Lower > r.Lower || w.Upper < r.Upper {
				t.Fatalf("Widen(%v) narrowed %+v to %+v", x1, r, w)
			}
		}
		if iv, err := Wilson(x1, n1, conf); err == nil {
			if !(iv.Lower >= 0 && iv.Upper <= 1 && iv.Lower <= iv.Upper) {
				t.Fatalf("Wilson(%v,%v,%v) = %+v", x1, n1, conf, iv)
			}
		}
		_ = BinomialLLR(x1, n1, x0, n0)
		_ = PoissonLLR(x1, n1, x0, n0)
		_ = BinomialKL(x0, n0)
		_ = PoissonKL(x0, n0)
		_ = SiegmundARL(x1, n1)
		_ = ExpectedDelay(x1, n1)
		if n, err := MinSamplesForQuantileCI(x0, conf); err == nil && n < 1 {
			t.Fatalf("MinSamplesForQuantileCI(%v,%v) = %d", x0, conf, n)
		}
		_, _, _ = Threshold(x1, int(n1), time.Duration(n0))
	})
}

func FuzzSequences(f *testing.F) {
	f.Add(encode(1, -2, 3, 1, 1), 4.0, 0.99)
	f.Add(encode(math.NaN(), math.Inf(1), math.Inf(-1)), math.Inf(1), math.NaN())
	f.Add([]byte{}, 0.0, 0.5)
	f.Fuzz(func(t *testing.T, raw []byte, h, q float64) {
		v := floats(raw)
		r := CUSUM(v, h)
		if r.Alarm && (r.AlarmIndex < 0 || r.AlarmIndex >= len(v) || r.OnsetIndex < 0 || r.OnsetIndex > r.AlarmIndex) {
			t.Fatalf("CUSUM(%v, %v) = %+v: indices out of range", v, h, r)
		}
		if r.Max < 0 || r.Last < 0 || r.Last > r.Max && !math.IsInf(r.Last, 1) {
			t.Fatalf("CUSUM(%v, %v) = %+v: statistic negative or above max", v, h, r)
		}

		half := len(v) / 2
		if d := Dispersion(v[:half], v[half:], q); !(d >= 1) {
			t.Fatalf("Dispersion = %v", d)
		}
		if d := PoissonDispersion(v[:half], v[half:], q); !(d >= 1) {
			t.Fatalf("PoissonDispersion = %v", d)
		}

		var bs []Bucket
		for i := 0; i+1 < len(v); i += 2 {
			bs = append(bs, Bucket{UpperBound: v[i], Count: v[i+1]})
		}
		got := BucketQuantile(q, bs)
		if q >= 0 && q <= 1 && !math.IsNaN(got) && !math.IsInf(got, 0) {
			lo, hi := math.Inf(1), math.Inf(-1)
			for _, b := range bs {
				if !math.IsInf(b.UpperBound, 0) {
					lo, hi = math.Min(lo, b.UpperBound), math.Max(hi, b.UpperBound)
				}
			}
			if got > hi || got < math.Min(lo, 0) {
				t.Fatalf("BucketQuantile(%v, %v) = %v outside [%v, %v]", q, bs, got, math.Min(lo, 0), hi)
			}
		}
	})
}
