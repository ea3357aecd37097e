package web

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/flagwatch/flagwatch/pipeline/render"
)

// Pct formats a relative change for people: 0.1234 → "+12.3%", −0.05 → "−5.0%" (a true
// minus sign, so a sign never depends on colour or on a hyphen being noticed).
func Pct(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "n/a"
	}
	s := fmt.Sprintf("%+.1f%%", 100*x)
	if s == "-0.0%" {
		s = "+0.0%"
	}
	return strings.Replace(s, "-", "−", 1)
}

// Interval formats an interval of relative changes: "[−3.1%, +20.9%]".
func Interval(lo, hi float64) string { return "[" + Pct(lo) + ", " + Pct(hi) + "]" }

// Share formats a fraction of a whole without a sign: 0.5 → "50.0%".
func Share(x float64) string { return fmt.Sprintf("%.1f%%", 100*x) }

// Count formats a whole number with thousands separators, as the Slack messages do:
// 12345 → "12,345".
func Count(n int64) string { return render.Count(n) }

// Mean formats a metric's mean with enough digits to compare two of them.
func Mean(x float64) string {
	switch a := math.Abs(x); {
	case a == 0:
		return "0"
	case a >= 1000:
		return Count(int64(math.Round(x)))
	case a >= 10:
		return strconv.FormatFloat(x, 'f', 2, 64)
	default:
		return strconv.FormatFloat(x, 'f', 4, 64)
	}
}

// Prob formats a probability: 0.9861 → "98.6%".
func Prob(x float64) string { return fmt.Sprintf("%.1f%%", 100*x) }

// PValue formats a p-value: "0.003", "< 0.0001".
func PValue(p float64) string {
	switch {
	case p < 0.0001:
		return "< 0.0001"
	case p < 0.001:
		return strconv.FormatFloat(p, 'f', 4, 64)
	default:
		return strconv.FormatFloat(p, 'f', 3, 64)
	}
}

// Duration formats a span for people: "45 min", "6 h", "3 days".
func Duration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return "under a minute"
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h", int(d.Hours()))
	default:
		return fmt.Sprintf("%d days", int(d.Hours()/24))
	}
}

// When formats a time in UTC to the minute.
func When(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }

// roundUsers rounds a user count up to two significant digits ("2,300"): the estimate
// it comes from is not better than that.
func roundUsers(n float64) int64 {
	if n <= 0 {
		return 0
	}
	mag := math.Pow(10, math.Max(0, math.Floor(math.Log10(n))-1))
	return int64(math.Ceil(n/mag) * mag)
}
