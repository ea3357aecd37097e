package evaluate_test

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/evaluate"
)

// The SPEC §4 example: +10% conversion on 10,000 users per arm. A
// fixed-horizon test would call it (p = 0.028), but the always-valid
// interval still includes zero, so the decision is inconclusive. The second
// input is invalid: the error names its line and field, and Run returns 2.
func ExampleRun() {
	in := `{"metric": {"name": "purchase", "kind": "conversion", "goal": "increase"},
 "alpha": 0.05, "expected_split": [0.5, 0.5], "sequential_tuning": 5000,
 "variants": [
   {"name": "control", "n": 10000, "sum": 1000, "sum_sq": 1000},
   {"name": "test",    "n": 10000, "sum": 1100, "sum_sq": 1100}]}
{"metric": {"kind": "conversion"}, "variants": [{"name": "control", "n": 1, "sum": 0}]}`
	var out bytes.Buffer
	code := evaluate.Run(strings.NewReader(in), &out, os.Stdout)

	var v evaluate.Output
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		panic(err)
	}
	r := v.Results[0]
	fmt.Printf("exit %d; %s: lift %.3f, fixed p %.3f, sequential p %.3f, CI [%.3f, %.3f], chance to win %.3f, %s\n",
		code, r.Variant, *r.Lift, r.Fixed.P, r.Sequential.P, r.Sequential.CI[0], r.Sequential.CI[1], *r.ChanceToWin, r.Decision)
	// Output:
	// line 6: variants: need at least 2 (control and a test variant), got 1
	// exit 2; test: lift 0.100, fixed p 0.028, sequential p 0.549, CI [-0.042, 0.242], chance to win 0.986, inconclusive
}
