package evaluate

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/stats"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// run is Run on a string.
func run(t *testing.T, input string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Run(strings.NewReader(input), &out, &errOut)
	return out.String(), errOut.String(), code
}

// lines decodes each output line into a generic tree.
func lines(t *testing.T, stdout string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		out = append(out, m)
	}
	return out
}

// TestGolden runs testdata/verdicts.jsonl (the SPEC example, a guardrail
// breach, a ratio metric, CUPED with the control listed second, three arms
// with BH and a prior, an SRM, a zero baseline) and compares with the golden
// verdicts: keys and strings exactly, numbers to 1e-12 relative (so an FMA
// on another architecture does not break it). go test -update rewrites it.
func TestGolden(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "verdicts.jsonl"))
	require.NoError(t, err)
	stdout, stderr, code := run(t, string(in))
	require.Equal(t, ExitOK, code, stderr)
	require.Empty(t, stderr)
	golden := filepath.Join("testdata", "verdicts.golden")
	if *update {
		require.NoError(t, os.WriteFile(golden, []byte(stdout), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	got, exp := lines(t, stdout), lines(t, string(want))
	require.Len(t, got, len(exp))
	for i := range exp {
		sameTree(t, exp[i], got[i], fmt.Sprintf("verdict %d", i+1))
	}
	decisions := make([]string, 0, len(got))
	for _, v := range got {
		for _, r := range v["results"].([]any) {
			decisions = append(decisions, r.(map[string]any)["decision"].(string))
		}
	}
	require.Equal(t, []string{"inconclusive", "guardrail_breach", "win", "inconclusive",
		"win", "inconclusive", "srm", "insufficient_data"}, decisions)
}

// sameTree compares decoded JSON trees: same keys, same strings and bools,
// numbers equal to 1e-12 relative. path locates a difference.
func sameTree(t *testing.T, want, got any, path string) {
	t.Helper()
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		require.True(t, ok, path)
		require.Equal(t, sortedKeys(w), sortedKeys(g), path)
		for k := range w {
			sameTree(t, w[k], g[k], path+"."+k)
		}
	case []any:
		g, ok := got.([]any)
		require.True(t, ok, path)
		require.Len(t, g, len(w), path)
		for i := range w {
			sameTree(t, w[i], g[i], fmt.Sprintf("%s[%d]", path, i))
		}
	case float64:
		g, ok := got.(float64)
		require.True(t, ok, path)
		require.InDelta(t, w, g, 1e-12*math.Abs(w), path)
	default:
		require.Equal(t, want, got, path)
	}
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// The output shape of SPEC §4, key by key, including nulls for an
// undefined lift.
func TestOutputShape(t *testing.T) {
	stdout, stderr, code := run(t, `{"metric": {"name": "m", "kind": "conversion"}, "variants": [{"name": "control", "n": 1000, "sum": 100}, {"name": "test", "n": 1000, "sum": 120}]}`)
	require.Equal(t, ExitOK, code, stderr)
	v := lines(t, stdout)[0]
	require.Equal(t, []string{"alpha", "control", "correction", "metric", "results", "sequential_tuning", "srm", "srm_p"}, sortedKeys(v))
	r := v["results"].([]any)[0].(map[string]any)
	require.Equal(t, []string{"chance_to_win", "cuped", "cuped_note", "decision", "fixed", "lift", "mean", "n",
		"reason", "se", "sequential", "variant"}, sortedKeys(r))
	require.Equal(t, []string{"ci", "p"}, sortedKeys(r["fixed"].(map[string]any)))
	require.Equal(t, []string{"ci", "p", "p_adjusted"}, sortedKeys(r["sequential"].(map[string]any)))
	require.Len(t, r["sequential"].(map[string]any)["ci"], 2)
	require.Equal(t, "holm", v["correction"])
	require.InDelta(t, 0.2, r["lift"], 1e-12)

	// Undefined lift: the keys stay, the numbers are null.
	stdout, _, _ = run(t, `{"metric": {"kind": "count"}, "variants": [{"name": "control", "n": 10, "sum": 0, "sum_sq": 0}, {"name": "test", "n": 10, "sum": 3, "sum_sq": 5}]}`)
	r = lines(t, stdout)[0]["results"].([]any)[0].(map[string]any)
	for _, k := range []string{"lift", "se", "fixed", "sequential", "chance_to_win"} {
		require.Contains(t, r, k)
		require.Nil(t, r[k], k)
	}
	require.Equal(t, "insufficient_data", r["decision"])
}

// One object per line, pretty-printed objects, several on one line, blank
// lines: one verdict per input, in input order.
func TestMultiLineInputOrder(t *testing.T) {
	obj := func(name string) string {
		return `{"metric": {"name": "` + name + `", "kind": "conversion"}, "variants": [{"name": "control", "n": 500, "sum": 50}, {"name": "test", "n": 500, "sum": 55}]}`
	}
	pretty := "{\n  \"metric\": {\n    \"name\": \"m3\",\n    \"kind\": \"conversion\"\n  },\n  \"variants\": [\n" +
		"    {\"name\": \"control\", \"n\": 500, \"sum\": 50},\n    {\"name\": \"test\", \"n\": 500, \"sum\": 55}\n  ]\n}"
	input := obj("m1") + "\n" + obj("m2") + "\n\n" + pretty + "\n" + obj("m4") + " " + obj("m5") + "\n" + obj("m6")
	stdout, stderr, code := run(t, input)
	require.Equal(t, ExitOK, code, stderr)
	var names []string
	for _, v := range lines(t, stdout) {
		names = append(names, v["metric"].(string))
	}
	require.Equal(t, []string{"m1", "m2", "m3", "m4", "m5", "m6"}, names)
	require.Equal(t, 6, strings.Count(stdout, "\n"))

	stdout, stderr, code = run(t, "")
	require.Equal(t, ExitOK, code)
	require.Empty(t, stdout)
	require.Empty(t, stderr)
}

// Invalid input: one line on stderr naming the line the input starts on and
// the field, exit code 2, and the verdicts of the inputs before it written.
func TestInvalidInputErrors(t *testing.T) {
	valid := `{"metric": {"kind": "conversion"}, "variants": [{"name": "control", "n": 100, "sum": 10}, {"name": "test", "n": 100, "sum": 12}]}`
	// variant returns a one-variant-changed input: v0 and v1 are the JSON
	// bodies (without braces) of the two variants.
	input := func(metric, extra, v0, v1 string) string {
		return `{"metric": {` + metric + `}` + extra + `, "variants": [{` + v0 + `}, {` + v1 + `}]}`
	}
	conv := `"kind": "conversion"`
	count := `"kind": "count"`
	ratio := `"kind": "ratio"`
	ctl := `"name": "control", "n": 100, "sum": 10`
	tst := `"name": "test", "n": 100, "sum": 12`
	ctlC := `"name": "control", "n": 100, "sum": 10, "sum_sq": 20`
	tstC := `"name": "test", "n": 100, "sum": 12, "sum_sq": 20`
	ctlR := ctlC + `, "den_sum": 100, "den_sum_sq": 150, "cross_sum": 12`
	tests := []struct {
		name, input, want string
	}{
		{"n below 2 on line 3", valid + "\n" + valid + "\n" + input(conv, "", ctl, `"name": "test", "n": 1, "sum": 1`),
			"line 3: variants[1].n: must be ≥ 2, got 1"},
		{"negative n", input(conv, "", `"name": "control", "n": -3, "sum": 0`, tst), "line 1: variants[0].n: must be ≥ 2, got -3"},
		{"fractional n", input(conv, "", `"name": "control", "n": 10.5, "sum": 1`, tst), "line 1: variants[0].n: must be a whole number, got 10.5"},
		{"missing n", input(conv, "", `"name": "control", "sum": 1`, tst), "line 1: variants[0].n: required"},
		{"missing sum", input(conv, "", `"name": "control", "n": 100`, tst), "line 1: variants[0].sum: required"},
		{"negative count", input(count, "", `"name": "control", "n": 100, "sum": -5, "sum_sq": 30`, tstC),
			"line 1: variants[0].sum: must be ≥ 0 for a count metric, got -5"},
		{"conversions above n", input(conv, "", ctl, `"name": "test", "n": 100, "sum": 101`),
			"line 1: variants[1].sum: must be a whole number of converted users between 0 and n (100), got 101"},
		{"conversion sum_sq differs from sum", input(conv, "", `"name": "control", "n": 100, "sum": 10, "sum_sq": 9`, tst),
			"line 1: variants[0].sum_sq: must equal sum for a conversion metric (x² = x for 0/1 values), got 9 with sum 10"},
		{"sum_sq below sum²/n", input(count, "", `"name": "control", "n": 100, "sum": 100, "sum_sq": 50`, tstC),
			"line 1: variants[0].sum_sq: must be ≥ sum²/n = 100 (Cauchy–Schwarz), got 50"},
		{"sum_sq missing for count", input(count, "", ctl, tstC), "line 1: variants[0].sum_sq: required for a count metric"},
		{"unknown kind", input(`"kind": "median"`, "", ctl, tst),
			`line 1: metric.kind: must be one of conversion, count, sum, mean, ratio; got "median"`},
		{"missing kind", input(`"name": "x"`, "", ctl, tst), "line 1: metric.kind: required (conversion, count, sum, mean or ratio)"},
		{"bad goal", input(conv+`, "goal": "up"`, "", ctl, tst), `line 1: metric.goal: must be increase or decrease, got "up"`},
		{"missing variants", `{"metric": {"kind": "conversion"}}`, "line 1: variants: need at least 2 (control and a test variant), got 0"},
		{"one variant", `{"metric": {"kind": "conversion"}, "variants": [{` + ctl + `}]}`,
			"line 1: variants: need at least 2 (control and a test variant), got 1"},
		{"bad alpha", input(conv, `, "alpha": 1.5`, ctl, tst), "line 1: alpha: must be in (0, 0.5), got 1.5"},
		{"zero alpha", input(conv, `, "alpha": 0`, ctl, tst), "line 1: alpha: must be in (0, 0.5), got 0"},
		{"bad tuning", input(conv, `, "sequential_tuning": 0`, ctl, tst), "line 1: sequential_tuning: must be > 0, got 0"},
		{"bad correction", input(conv, `, "correction": "bonferroni"`, ctl, tst), `line 1: correction: must be holm, bh or none, got "bonferroni"`},
		{"bad prior", input(conv, `, "prior": {"mean": 0, "variance": -1}`, ctl, tst), "line 1: prior.variance: must be > 0, got -1"},
		{"bad min users", input(conv, `, "min_users_per_variant": 2.5`, ctl, tst), "line 1: min_users_per_variant: must be a whole number ≥ 0, got 2.5"},
		{"split length", input(conv, `, "expected_split": [0.5, 0.25, 0.25]`, ctl, tst), "line 1: expected_split: has 3 weights for 2 variants"},
		{"split sum", input(conv, `, "expected_split": [0.5, 0.6]`, ctl, tst), "line 1: expected_split: must sum to 1, got 1.1"},
		{"split zero", input(conv, `, "expected_split": [1, 0]`, ctl, tst), "line 1: expected_split[1]: must be > 0, got 0"},
		{"guardrail both", input(count+`, "guardrail": {"max_increase": 0.3, "max_decrease": 0.2}`, "", ctlC, tstC),
			"line 1: metric.guardrail: needs exactly one of max_increase and max_decrease"},
		{"guardrail negative", input(count+`, "guardrail": {"max_increase": -0.3}`, "", ctlC, tstC),
			"line 1: metric.guardrail.max_increase: must be > 0, got -0.3"},
		{"guardrail decrease 100%", input(count+`, "guardrail": {"max_decrease": 1}`, "", ctlC, tstC),
			"line 1: metric.guardrail.max_decrease: must be in (0, 1), got 1"},
		{"duplicate variant", input(conv, "", ctl, `"name": "control", "n": 100, "sum": 12`), `line 1: variants[1].name: duplicate "control"`},
		{"nameless variant", input(conv, "", ctl, `"n": 100, "sum": 12`), "line 1: variants[1].name: required"},
		{"partial pre-period", input(count, "", ctlC+`, "pre_sum": 5, "pre_sum_sq": 9`, tstC),
			"line 1: variants[0].pre_cross: required when any of pre_sum, pre_sum_sq, pre_cross is given"},
		{"impossible pre_cross", input(count, "", ctlC+`, "pre_sum": 10, "pre_sum_sq": 20, "pre_cross": 100`, tstC),
			"line 1: variants[0].pre_cross: inconsistent with sum_sq and pre_sum_sq: the implied correlation is 5.21, beyond ±1"},
		{"ratio without denominator", input(ratio, "", ctlC, tstC), "line 1: variants[0].den_sum: required for a ratio metric"},
		{"impossible cross_sum", input(ratio, "", ctlR, tstC+`, "den_sum": 100, "den_sum_sq": 150, "cross_sum": 500`),
			"line 1: variants[1].cross_sum: inconsistent with sum_sq and den_sum_sq: the implied correlation is 16, beyond ±1"},
		{"denominator on a count", input(count, "", ctlC+`, "den_sum": 1`, tstC),
			"line 1: variants[0].den_sum: only for ratio metrics, this one is count"},
		{"unknown field", input(count, "", `"name": "control", "n": 100, "sum": 10, "sum_squares": 20`, tstC),
			"line 1: variants[0].sum_squares: unknown field"},
		{"field case matters", input(conv, `, "Alpha": 0.1`, ctl, tst), "line 1: Alpha: unknown field"},
		{"quoted number", input(conv, "", `"name": "control", "n": "100", "sum": 10`, tst),
			"line 1: variants[0].n: must be a number, got string"},
		{"variants not an array", `{"metric": {"kind": "conversion"}, "variants": {}}`, "line 1: variants: must be an array, got object"},
		{"malformed JSON", valid + "\n" + `{"metric": {"kind": "conversion"},}`,
			"line 2: malformed JSON: unexpected trailing comma after object field: }"},
		{"bad literal", `{"metric": {"kind": "conversion"}, "alpha": tru}`,
			"line 1: malformed JSON: expected 'true' but found invalid token: tru}"},
		{"truncated", valid + "\n\n" + `{"metric": {"kind": "conversion"}, "variants": [`, "line 3: malformed JSON: unexpected end of input"},
		{"not an object", `[1, 2]`, "line 1: expected a JSON object, got array"},
		{"bare number", valid + "\n42\n", "line 2: expected a JSON object, got number"},
		{"pretty-printed, error inside", valid + "\n{\n  \"metric\": {\"kind\": \"conversion\"},\n  \"variants\": [\n    {" + ctl +
			"},\n    {\"name\": \"test\", \"n\": 1, \"sum\": 1}\n  ]\n}\n", "line 2: variants[1].n: must be ≥ 2, got 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := run(t, tc.input)
			require.Equal(t, ExitInvalid, code)
			require.Equal(t, tc.want+"\n", stderr)
			// Verdicts for the valid inputs before the bad one were written.
			require.Equal(t, strings.Count(tc.input, valid), strings.Count(stdout, "\n"))
		})
	}
}

// The command's numbers are the engine's numbers: the same input evaluated
// through Run (JSON in, JSON out) and through stats.Evaluate directly agree
// exactly — JSON's shortest float formatting round-trips float64.
func TestCommandEqualsDirectStatsCalls(t *testing.T) {
	input := `{"metric": {"name": "rev", "kind": "sum", "goal": "increase", "guardrail": {"max_decrease": 0.2}}, "alpha": 0.1, "sequential_tuning": 20000, "prior": {"mean": 0.01, "variance": 0.04}, "correction": "bh",
	  "variants": [{"name": "control", "n": 8000, "sum": 96000, "sum_sq": 2900000, "pre_sum": 90000, "pre_sum_sq": 2500000, "pre_cross": 2400000},
	               {"name": "b", "n": 8100, "sum": 99000, "sum_sq": 3000000, "pre_sum": 91000, "pre_sum_sq": 2550000, "pre_cross": 2480000},
	               {"name": "c", "n": 7900, "sum": 93000, "sum_sq": 2800000, "pre_sum": 88000, "pre_sum_sq": 2450000, "pre_cross": 2350000}]}`
	stdout, stderr, code := run(t, input)
	require.Equal(t, ExitOK, code, stderr)
	var got Output
	require.NoError(t, json.Unmarshal([]byte(stdout), &got))

	mom := func(n int64, s, ss, ps, pss, pc float64) stats.Moments {
		return stats.Moments{N: n, Sum: s, SumSq: ss, Pre: &stats.PrePeriod{Sum: ps, SumSq: pss, Cross: pc}}
	}
	rep, err := stats.Evaluate(stats.Experiment{
		Kind: stats.Sum, Goal: stats.Increase, Alpha: 0.1, Tuning: 20000,
		Guardrail:  &stats.Guardrail{MaxDecrease: 0.2},
		Prior:      &stats.Prior{Mean: 0.01, Variance: 0.04},
		Correction: stats.BenjaminiHochberg,
		Variants: []stats.Variant{
			{Name: "control", Moments: mom(8000, 96000, 2900000, 90000, 2500000, 2400000)},
			{Name: "b", Moments: mom(8100, 99000, 3000000, 91000, 2550000, 2480000)},
			{Name: "c", Moments: mom(7900, 93000, 2800000, 88000, 2450000, 2350000)},
		},
	})
	require.NoError(t, err)
	require.Equal(t, rep.SRM.P, got.SRMP)
	require.Equal(t, "benjamini-hochberg", got.Correction)
	require.Len(t, got.Results, 2)
	for i, r := range rep.Results {
		g := got.Results[i]
		require.Equal(t, r.Name, g.Variant)
		require.True(t, g.CUPED)
		require.Equal(t, r.Effect.CUPED.Theta, *g.CUPEDTheta)
		require.Equal(t, r.Effect.Lift, *g.Lift)
		require.Equal(t, r.Effect.SE, *g.SE)
		require.Equal(t, r.Fixed.P, g.Fixed.P)
		require.Equal(t, [2]float64{r.Fixed.Lo, r.Fixed.Hi}, g.Fixed.CI)
		require.Equal(t, r.Sequential.P, g.Sequential.P)
		require.Equal(t, r.SequentialPAdjusted, *g.Sequential.PAdjusted)
		require.Equal(t, [2]float64{r.Sequential.Lo, r.Sequential.Hi}, g.Sequential.CI)
		require.Equal(t, r.Posterior.ChanceToWin, *g.ChanceToWin)
		require.Equal(t, r.Guardrail.Bound, g.Guardrail.Bound)
		require.Equal(t, r.Guardrail.P, g.Guardrail.P)
		require.Equal(t, -0.2, g.Guardrail.Limit)
		require.Equal(t, string(r.Decision), g.Decision)
		require.Equal(t, r.Reason, g.Reason)
	}
}

// Verdict is the in-process entry point; its errors are FieldErrors.
func TestVerdictInProcess(t *testing.T) {
	in := Input{
		Metric: Metric{Name: "purchase", Kind: "conversion"},
		Variants: []Variant{
			{Name: "control", N: Float(10000), Sum: Float(1000)},
			{Name: "test", N: Float(10000), Sum: Float(1200)},
		},
	}
	out, err := Verdict(in)
	require.NoError(t, err)
	require.Equal(t, "win", out.Results[0].Decision)
	require.InDelta(t, 0.2, *out.Results[0].Lift, 1e-12)

	in.Variants[1].Sum = Float(math.NaN())
	_, err = Verdict(in)
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "variants[1].sum", fe.Field)
	require.EqualError(t, err, "variants[1].sum: must be a finite number, got NaN")
}

// A write failure is an I/O error (exit 1), not invalid input.
func TestRunWriteError(t *testing.T) {
	var errOut bytes.Buffer
	valid := `{"metric": {"kind": "conversion"}, "variants": [{"name": "control", "n": 100, "sum": 10}, {"name": "test", "n": 100, "sum": 12}]}`
	code := Run(strings.NewReader(valid), failingWriter{}, &errOut)
	require.Equal(t, ExitIO, code)
	require.Equal(t, "evaluate: writing verdict: disk full\n", errOut.String())
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errDiskFull }

var errDiskFull = errors.New("disk full")

// A nesting bomb on stdin is an invalid input (exit 2, the line named), never a crash.
func TestNestingBombIsInvalidInput(t *testing.T) {
	for name, input := range map[string]string{
		"closed": strings.Repeat("[", 2<<20) + strings.Repeat("]", 2<<20),
		"open":   `{"metric": ` + strings.Repeat("[", 2<<20),
		"inside": `{"metric": {"kind": "conversion"}, "variants": ` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
	} {
		t.Run(name, func(t *testing.T) {
			_, stderr, code := run(t, "\n"+input)
			require.Equal(t, ExitInvalid, code)
			require.Equal(t, "line 2: malformed JSON: nested deeper than 64 levels\n", stderr)
		})
	}
}
