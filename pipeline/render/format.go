package render

import (
	"math"
	"net/url"
	"strconv"
	"strings"

	"github.com/flagwatch/flagwatch/pipeline/alert"
)

// Escape makes s inert inside Slack mrkdwn: Slack's three control characters become
// entities (https://api.slack.com/reference/surfaces/formatting#escaping), so a flag key,
// segment value or metric name such as "<!channel>", "<@U123>" or "<http://evil|click>"
// shows as typed and never pings or links.
func Escape(s string) string { return escaper.Replace(s) }

var escaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

// Link is a deliberate mrkdwn link <url|label>: the label is escaped, and the URL is
// accepted only with an http(s) scheme and percent-encoded where Slack's link syntax would
// break ("|", "<", ">", spaces); anything else yields the escaped label alone.
func Link(rawURL, label string) string {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Escape(label)
	}
	s := u.String()
	s = strings.NewReplacer("|", "%7C", "<", "%3C", ">", "%3E", " ", "%20", "&", "&amp;").Replace(s)
	return "<" + s + "|" + Escape(label) + ">"
}

// Decimals is the number of decimals that gives the largest of xs (relative changes) two
// significant digits as a percentage: 0.123 → 0 ("12%"), 0.053 → 1 ("5.3%"), 0.004 → 2
// ("0.40%"). A lift and its interval share the decimals of the largest, so they read
// consistently.
func Decimals(xs ...float64) int {
	m := 0.0
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			m = math.Max(m, math.Abs(100*x))
		}
	}
	switch {
	case m >= 9.95:
		return 0
	case m >= 0.995:
		return 1
	}
	return 2
}

// Lift formats a relative change as a signed percentage with d decimals, with a real
// minus sign: "+32%", "−67%", "0.0%".
func Lift(x float64, d int) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "n/a"
	}
	s := strconv.FormatFloat(math.Abs(100*x), 'f', d, 64)
	if s == strconv.FormatFloat(0, 'f', d, 64) {
		return s + "%"
	}
	if x < 0 {
		return "−" + s + "%"
	}
	return "+" + s + "%"
}

// Percent formats a relative change with two significant digits.
func Percent(x float64) string { return Lift(x, Decimals(x)) }

// hasInterval reports whether ci is a real interval: one that was never computed is
// [0, 0].
func hasInterval(ci [2]float64) bool {
	return ci[0] != ci[1] && !math.IsNaN(ci[0]) && !math.IsNaN(ci[1]) && ci[0] < ci[1]
}

// LiftInterval formats a lift and, when it exists, its interval with shared decimals:
// "−35% [−50%, −20%]".
func LiftInterval(lift float64, ci [2]float64) string {
	if !hasInterval(ci) {
		return Percent(lift)
	}
	d := Decimals(lift, ci[0], ci[1])
	return Lift(lift, d) + " [" + Lift(ci[0], d) + ", " + Lift(ci[1], d) + "]"
}

// JoinAnd lists items the way a sentence does: "IN", "IN and US", "IN, US and DE".
func JoinAnd(xs []string) string {
	switch len(xs) {
	case 0:
		return ""
	case 1:
		return xs[0]
	}
	return strings.Join(xs[:len(xs)-1], ", ") + " and " + xs[len(xs)-1]
}

// Count formats an integer with thousands separators: 10012 → "10,012".
func Count[T int64 | uint64 | int](n T) string {
	s := strconv.FormatInt(int64(n), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "−" + b.String()
	}
	return b.String()
}

// means formats two means the way the metric reads: a conversion as percentages with the
// same decimals ("26.4% → 8.9%"), anything else with three significant digits of the
// larger ("1.24 → 1.31", "1,204 → 1,311").
func means(kind string, a, b float64) (string, string) {
	if kind == "conversion" {
		d := 1
		if math.Max(math.Abs(a), math.Abs(b)) < 0.01 {
			d = 2
		}
		return strconv.FormatFloat(100*a, 'f', d, 64) + "%", strconv.FormatFloat(100*b, 'f', d, 64) + "%"
	}
	m := math.Max(math.Abs(a), math.Abs(b))
	d := 2
	if m > 0 {
		d = max(0, 2-int(math.Floor(math.Log10(m))))
	}
	return number(a, d), number(b, d)
}

// number formats x with d decimals and thousands separators.
func number(x float64, d int) string {
	s := strconv.FormatFloat(math.Abs(x), 'f', d, 64)
	whole, frac, _ := strings.Cut(s, ".")
	n, _ := strconv.ParseInt(whole, 10, 64)
	out := Count(n)
	if frac != "" {
		out += "." + frac
	}
	if x < 0 && strings.Trim(s, "0.") != "" {
		out = "−" + out
	}
	return out
}

// pValue formats a p-value, escaped for mrkdwn: "p = 0.012", "p &lt; 0.001".
func pValue(name string, p float64) string {
	switch {
	case p < 0.001:
		return name + " &lt; 0.001"
	case p < 0.01:
		return name + " = " + strconv.FormatFloat(p, 'f', 4, 64)
	}
	return name + " = " + strconv.FormatFloat(p, 'f', 3, 64)
}

// chance formats a probability as a percentage, escaped for mrkdwn.
func chance(p float64) string {
	switch {
	case p < 0.01:
		return "&lt;1%"
	case p > 0.99:
		return "&gt;99%"
	}
	return strconv.FormatFloat(100*p, 'f', 0, 64) + "%"
}

// Words names a decision for people.
func Words(d string) string {
	switch d {
	case alert.GuardrailBreach:
		return "guardrail breached"
	case alert.SRM:
		return "sample ratio mismatch"
	case alert.SegmentDivergence:
		return "segments diverge"
	case alert.BehaviourShift:
		return "behaviour shift"
	case alert.Stale:
		return "exposures stopped"
	case alert.InsufficientData, "":
		return "insufficient data"
	}
	return strings.ReplaceAll(d, "_", " ")
}

// Emoji is a decision's status mark.
func Emoji(d string) string {
	switch d {
	case alert.Win:
		return ":large_green_circle:"
	case alert.Loss, alert.GuardrailBreach:
		return ":red_circle:"
	case alert.SRM, alert.Stale, alert.SegmentDivergence, alert.BehaviourShift:
		return ":large_orange_circle:"
	case alert.Resolved:
		return ":white_check_mark:"
	case alert.InsufficientData:
		return ":hourglass_flowing_sand:"
	}
	return ":white_circle:"
}

// truncate cuts s to at most n characters, ending in "…" when cut. It never cuts inside
// an entity or a link, which would leave a half-escaped character.
func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	cut := n - 1
	for i := cut - 1; i >= 0 && i >= cut-300; i-- {
		if r[i] == '>' || r[i] == ';' || r[i] == ' ' {
			break
		}
		if r[i] == '&' || r[i] == '<' {
			cut = i
			break
		}
	}
	return string(r[:cut]) + "…"
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	r := []rune(s)
	return strings.ToUpper(string(r[0])) + string(r[1:])
}

// sentence ends s with a full stop unless it ends with punctuation already.
func sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || strings.HasSuffix(s, ".") || strings.HasSuffix(s, "!") || strings.HasSuffix(s, "?") || strings.HasSuffix(s, "…") {
		return s
	}
	return s + "."
}
