// Package evaluate is `analyzer evaluate`: the statistics engine as a
// command that reads sufficient statistics as JSON and prints verdicts as
// JSON (SPEC §4), for notebooks, simulations and cross-checks against
// GrowthBook.
//
// The decision that shapes it: the command and the analyzer service share
// one code path. Verdict (validate, then stats.Evaluate, then Render) is what
// both call; Run only adds the stream framing and error reporting, so any
// number the command prints is the number the service would alert on.
package evaluate

import (
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/stats"
)

// Exit codes of Run.
const (
	ExitOK      = 0
	ExitIO      = 1 // reading input or writing output failed
	ExitInvalid = 2 // invalid input
)

// Verdict validates one input and evaluates it. A validation error is a
// *FieldError naming the offending field.
func Verdict(in Input) (Output, error) {
	x, err := experiment(in)
	if err != nil {
		return Output{}, err
	}
	rep, err := stats.Evaluate(x)
	if err != nil {
		return Output{}, fmt.Errorf("evaluating %q: %w", in.Metric.Name, err)
	}
	return Render(in.Metric.Name, rep), nil
}

// Render turns an engine report into the JSON verdict shape; the analyzer
// uses it for reports it evaluated from ClickHouse sums directly.
func Render(metric string, rep stats.Report) Output {
	out := Output{
		SRMP:             rep.SRM.P,
		SRM:              rep.SRM.Alarm,
		Correction:       string(rep.Correction),
		Metric:           metric,
		Alpha:            rep.Alpha,
		SequentialTuning: rep.Tuning,
		Control:          Arm{Variant: rep.Control.Name, N: rep.Control.N, Mean: num(rep.Control.Mean)},
		Results:          make([]Result, len(rep.Results)),
	}
	for i, r := range rep.Results {
		out.Results[i] = render(r)
	}
	return out
}

func render(r stats.Result) Result {
	out := Result{
		Variant:   r.Name,
		N:         r.N,
		Mean:      num(r.Mean),
		CUPED:     r.Effect.CUPED.Applied,
		CUPEDNote: r.Effect.CUPED.Reason,
		Decision:  string(r.Decision),
		Reason:    r.Reason,
	}
	if r.Effect.CUPED.Applied {
		out.CUPEDTheta = num(r.Effect.CUPED.Theta)
	}
	if r.Err != nil {
		return out // no lift: numbers stay null, the reason says why
	}
	out.Lift, out.SE = num(r.Effect.Lift), num(r.Effect.SE)
	out.Fixed = &Test{P: r.Fixed.P, CI: [2]float64{r.Fixed.Lo, r.Fixed.Hi}}
	out.Sequential = &Test{P: r.Sequential.P, PAdjusted: num(r.SequentialPAdjusted),
		CI: [2]float64{r.Sequential.Lo, r.Sequential.Hi}}
	out.ChanceToWin = num(r.Posterior.ChanceToWin)
	if g := r.Guardrail; g != nil {
		out.Guardrail = &GuardrailCheck{Limit: g.Null, Bound: g.Bound, P: g.P, Breach: g.Rejected}
	}
	return out
}

// num maps non-finite values to null: JSON has no NaN or Inf.
func num(x float64) *float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return &x
}

// Run reads inputs from in — a stream of JSON objects, one per line or
// pretty-printed across lines — and writes one verdict per input, one per
// line, in input order. On the first invalid input it writes a one-line
// error naming the line the input starts on and the field, e.g.
// "line 3: variants[1].n: must be ≥ 2, got 1", and returns ExitInvalid;
// verdicts for earlier inputs have already been written.
func Run(in io.Reader, out, errOut io.Writer) int {
	vals := newValues(in)
	for {
		raw, line, err := vals.next()
		if errors.Is(err, io.EOF) {
			return ExitOK
		}
		if errors.Is(err, errTruncated) || errors.Is(err, errTooDeep) {
			fmt.Fprintf(errOut, "line %d: malformed JSON: %v\n", line, err)
			return ExitInvalid
		}
		if err != nil {
			fmt.Fprintf(errOut, "evaluate: %v\n", err)
			return ExitIO
		}
		if code := evaluateOne(raw, line, out, errOut); code != ExitOK {
			return code
		}
	}
}

func evaluateOne(raw []byte, line int, out, errOut io.Writer) int {
	in, err := decode(raw)
	if err == nil {
		var o Output
		if o, err = Verdict(in); err == nil {
			return write(o, out, errOut)
		}
	}
	fmt.Fprintf(errOut, "line %d: %v\n", line, err)
	return ExitInvalid
}

// write emits one verdict line. Each line goes out whole and at once, so a
// notebook reading a pipe sees every verdict as soon as it is computed.
func write(o Output, out, errOut io.Writer) int {
	// Without EscapeHTML: nothing here is embedded in HTML, and the reasons
	// read better with their χ² and ± intact.
	b, err := json.Append(nil, o, 0)
	if err == nil {
		_, err = out.Write(append(b, '\n'))
	}
	if err != nil {
		fmt.Fprintf(errOut, "evaluate: writing verdict: %v\n", err)
		return ExitIO
	}
	return ExitOK
}
