// Package rendertest holds the alerts the notifier's tests render and post: the
// new-checkout incident of the demo story, a later pass of it, and a hostile alert whose
// every text field tries to ping a channel.
package rendertest

import (
	"time"

	"github.com/flagwatch/flagwatch/pipeline/alert"
	"github.com/flagwatch/flagwatch/pipeline/digest"
)

// Detected is when the fixtures' findings were detected.
var Detected = time.Date(2024, 6, 3, 8, 15, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

func key(flag string, f alert.Finding) alert.Finding {
	f.DedupKey = alert.DedupKey(flag, f.Metric, f.Segment, f.Decision)
	if f.Variant != "" {
		f.DedupKey += "|" + f.Variant
	}
	return f
}

func country(v string) *alert.Segment {
	return &alert.Segment{Property: "$geoip_country_code", Value: ptr(v)}
}

// Divergence is new-checkout's headline: purchase conversion splits by country (US and IN
// win, GB loses) while the total is flat.
func Divergence() alert.Finding {
	return key("new-checkout", alert.Finding{
		Metric: "purchase conversion", Segment: &alert.Segment{Property: "$geoip_country_code"}, Variant: "test",
		Decision: alert.SegmentDivergence, Severity: alert.Warning, New: true,
		Summary: "new-checkout splits by country: US +32%, IN +36%, GB −67%; total +5% (inconclusive)",
		Reason:  "Cochran's Q across 3 countries, p < 0.001 (Benjamini–Hochberg over 3 properties tried)",
		Numbers: alert.Numbers{MetricKind: "conversion", Control: "control", Lift: 0.053, PropertiesTried: 3,
			Segments: []alert.SegmentEffect{
				{Property: "$geoip_country_code", Value: "US", N: 5102, Lift: 0.32, CI: [2]float64{0.20, 0.44}, Decision: alert.Win},
				{Property: "$geoip_country_code", Value: "GB", N: 2087, Lift: -0.67, CI: [2]float64{-0.80, -0.54}, Decision: alert.Loss},
				{Property: "$geoip_country_code", Value: "IN", N: 3011, Lift: 0.36, CI: [2]float64{0.21, 0.51}, Decision: alert.Win},
			}},
	})
}

func segmentFinding(value, decision, s string, lift, lo, hi, cm, vm float64, cn, vn int64) alert.Finding {
	return key("new-checkout", alert.Finding{
		Metric: "purchase conversion", Segment: country(value), Variant: "test", Decision: decision,
		Severity: map[string]string{alert.Win: alert.Info, alert.Loss: alert.Warning}[decision], New: true, Summary: s,
		Reason: "sequential 95% interval excludes zero (Waudby-Smith, N*=5000)",
		Numbers: alert.Numbers{MetricKind: "conversion", Control: "control", ControlN: cn, VariantN: vn,
			ControlMean: cm, VariantMean: vm, Lift: lift, CI: [2]float64{lo, hi}, P: 0.0004, ChanceToWin: map[string]float64{alert.Win: 0.9993, alert.Loss: 0.0004}[decision],
			Correction: "benjamini-hochberg"},
	})
}

// NewCheckout is the first alert of new-checkout's incident, as the analyzer groups it:
// the divergence as headline, the per-country loss and wins, and a revenue win.
func NewCheckout() *alert.Alert {
	head := Divergence()
	fs := []alert.Finding{
		head,
		segmentFinding("GB", alert.Loss, "new-checkout is losing 67% of purchase conversion in GB (test vs control)", -0.67, -0.80, -0.54, 0.264, 0.0871, 1043, 1044),
		segmentFinding("IN", alert.Win, "new-checkout lifts purchase conversion in IN by 36% (test vs control)", 0.36, 0.21, 0.51, 0.212, 0.288, 1502, 1509),
		segmentFinding("US", alert.Win, "new-checkout lifts purchase conversion in US by 32% (test vs control)", 0.32, 0.20, 0.44, 0.231, 0.305, 2550, 2552),
		key("new-checkout", alert.Finding{Metric: "revenue per user", Variant: "test", Decision: alert.Win, Severity: alert.Info, New: true,
			Summary: "new-checkout lifts revenue per user by 9% (test vs control)",
			Numbers: alert.Numbers{MetricKind: "sum", Control: "control", ControlN: 15085, VariantN: 15102, ControlMean: 4.12, VariantMean: 4.49,
				Lift: 0.09, CI: [2]float64{0.021, 0.159}, P: 0.004, ChanceToWin: 0.998, CUPED: true}}),
	}
	return &alert.Alert{
		Flag: "new-checkout", Metric: head.Metric, Segment: head.Segment, Variant: head.Variant, Decision: head.Decision,
		Severity: head.Severity, DedupKey: head.DedupKey, Summary: head.Summary, Reason: head.Reason,
		Action:  "ship to US and IN, not GB: target the variant by country",
		Numbers: head.Numbers, SlackChannel: "#checkout", DetectedAt: Detected, Findings: fs,
		PageURL: "https://flagwatch.example.com/flags/new-checkout",
	}
}

// Guardrail is a critical guardrail breach on new-checkout's errors per user.
func Guardrail() alert.Finding {
	return key("new-checkout", alert.Finding{Metric: "errors per user", Variant: "test", Decision: alert.GuardrailBreach,
		Severity: alert.Critical, New: true,
		Summary: "new-checkout breaks the errors per user guardrail: +41% (limit +30%)",
		Numbers: alert.Numbers{MetricKind: "count", Control: "control", ControlN: 15085, VariantN: 15102, ControlMean: 0.052,
			VariantMean: 0.0733, Lift: 0.41, CI: [2]float64{0.31, 0.52}, P: 0.0001}})
}

// NewCheckoutLater is a later pass: the guardrail breach is new and now the headline; the
// rest is as before, no longer new.
func NewCheckoutLater() *alert.Alert {
	first := NewCheckout()
	g := Guardrail()
	fs := []alert.Finding{g}
	for _, f := range first.Findings {
		f.New = false
		fs = append(fs, f)
	}
	return &alert.Alert{
		Flag: "new-checkout", Metric: g.Metric, Variant: g.Variant, Decision: g.Decision, Severity: g.Severity,
		DedupKey: g.DedupKey, Summary: g.Summary, Action: "roll back: the errors per user guardrail is breached",
		Numbers: g.Numbers, SlackChannel: "#checkout", DetectedAt: Detected.Add(15 * time.Minute), Findings: fs,
		Rollback: &alert.Rollback{Action: "webhook", Target: "https://hooks.example.com/flagwatch", Status: "ok",
			Detail: "HTTP 200", At: Detected.Add(16 * time.Minute)},
		PageURL: "https://flagwatch.example.com/flags/new-checkout",
	}
}

// Injections are texts that would ping or link if Slack parsed them.
var Injections = []string{"<!channel>", "<@U123>", "<http://evil.example|click>", "<!here>", "<!subteam^S1>"}

// Hostile is an alert whose every text field, from events or configuration, tries to ping
// a channel or plant a link.
func Hostile() *alert.Alert {
	seg := &alert.Segment{Property: "<!here>", Value: ptr("<!channel>")}
	f := alert.Finding{Metric: "<@U123>", Segment: seg, Variant: "<!subteam^S1>", Decision: alert.Loss, Severity: alert.Critical,
		Summary: "<!channel> is losing <http://evil.example|click>", Reason: "because <@U123>",
		Numbers: alert.Numbers{Control: "<!here>", ControlN: 100, VariantN: 100, ControlMean: 0.1, VariantMean: 0.05, Lift: -0.5,
			CI: [2]float64{-0.7, -0.3}, P: 0.001, Correction: "<!channel>",
			Segments: []alert.SegmentEffect{{Property: "<!here>", Value: "<@U123>", N: 10, Lift: -0.5, CI: [2]float64{-0.7, -0.3}, Decision: alert.Loss}}},
	}
	f.DedupKey = alert.DedupKey("<!channel>", f.Metric, f.Segment, f.Decision)
	div := alert.Finding{Metric: "<@U123>", Segment: &alert.Segment{Property: "<!here>"}, Variant: "<@U123>",
		Decision: alert.SegmentDivergence, Severity: alert.Warning, Summary: "<!channel> diverges",
		Numbers: alert.Numbers{Lift: 0.01, Segments: []alert.SegmentEffect{
			{Property: "<!here>", Value: "<!channel>", N: 10, Lift: 0.5, CI: [2]float64{0.3, 0.7}, Decision: alert.Win},
			{Property: "<!here>", Value: "<@U123>", N: 10, Lift: -0.5, CI: [2]float64{-0.7, -0.3}, Decision: alert.Loss}}}}
	div.DedupKey = alert.DedupKey("<!channel>", div.Metric, div.Segment, div.Decision)
	return &alert.Alert{Flag: "<!channel>", Metric: f.Metric, Segment: seg, Variant: f.Variant, Decision: f.Decision,
		Severity: f.Severity, DedupKey: f.DedupKey, Summary: f.Summary, Reason: f.Reason, Action: "ship it <!here>",
		Numbers: f.Numbers, SlackChannel: "#growth", DetectedAt: Detected, Findings: []alert.Finding{f, div},
		Rollback: &alert.Rollback{Action: "<!channel>", Target: "<!everyone>", Status: "<@U123>", Detail: "<http://evil.example|x>"},
		PageURL:  "https://flagwatch.example.com/flags/%3C!channel%3E"}
}

// DigestAt is the fixtures' digest slot.
var DigestAt = time.Date(2024, 6, 3, 9, 0, 0, 0, time.UTC)

// DigestRows are the latest passes of four flags this week (new-checkout diverging by
// country with GB losing, a guardrail breach, a winner, an SRM) and of two of them a week
// earlier, as analysis_results holds them.
func DigestRows() (now, prev []digest.Row) {
	at, before := DigestAt.Add(-time.Hour), DigestAt.Add(-7*24*time.Hour-time.Hour)
	row := func(pt time.Time, flag, metric, prop, val, variant string, n uint64, mean, lift, lo, hi, ctw float64, decision, reason string) digest.Row {
		r := digest.Row{PassTime: pt, Flag: flag, Metric: metric, SegmentProperty: prop, SegmentValue: val, Variant: variant,
			N: n, Mean: mean, Lift: lift, CILow: lo, CIHigh: hi, ChanceToWin: ctw, Decision: decision, Reason: reason}
		if decision != "" && lo != hi {
			r.ControlN, r.ControlMean, r.P = n, mean/(1+lift), 0.01
		}
		return r
	}
	het := func(pt time.Time, flag, metric, prop string, discovered bool, p float64, reason string) digest.Row {
		return digest.Row{PassTime: pt, Flag: flag, Metric: metric, SegmentProperty: prop, Variant: "test", N: 15102,
			P: p, Decision: "heterogeneity", Reason: reason, Discovered: discovered}
	}
	const cc = "$geoip_country_code"
	now = []digest.Row{
		row(at, "new-checkout", "purchase conversion", "", "", "control", 15085, 0.21, 0, 0, 0, 0, "", ""),
		row(at, "new-checkout", "purchase conversion", "", "", "test", 15102, 0.221, 0.053, -0.012, 0.118, 0.94, alert.Inconclusive, ""),
		row(at, "new-checkout", "purchase conversion", cc, "", "test", 15102, 0, 0.053, 0, 0, 0, alert.SegmentDivergence, "Cochran's Q p < 0.001"),
		row(at, "new-checkout", "purchase conversion", cc, "GB", "test", 2087, 0.087, -0.67, -0.80, -0.54, 0.0004, alert.Loss, ""),
		row(at, "new-checkout", "purchase conversion", cc, "IN", "test", 3011, 0.288, 0.36, 0.21, 0.51, 0.999, alert.Win, ""),
		row(at, "new-checkout", "purchase conversion", cc, "US", "test", 5102, 0.305, 0.32, 0.20, 0.44, 0.999, alert.Win, ""),
		row(at, "new-checkout", "purchase conversion", cc, "DE", "test", 1200, 0.2, 0.02, -0.2, 0.24, 0.56, alert.Inconclusive, ""),
		row(at, "new-checkout", "revenue per user", "", "", "test", 15102, 4.49, 0.09, 0.021, 0.159, 0.998, alert.Win, ""),
		row(at, "new-checkout", "errors per user", "", "", "test", 15102, 0.05, 0.04, -0.05, 0.13, 0.3, alert.Inconclusive, ""),
		row(at, "fast-search", "errors per user", "", "", "test", 9000, 0.08, 0.62, 0.41, 0.85, 0.0001, alert.GuardrailBreach, ""),
		row(at, "dark-mode", "pageviews", "", "", "test", 4000, 3.47, 0.12, 0.05, 0.19, 0.998, alert.Win, ""),
		row(at, "dark-mode", "pageviews", "plan", "pro", "test", 900, 3.9, 0.25, 0.08, 0.42, 0.99, alert.Win, ""),
		row(at, "onboarding-v2", "", "", "", "", 0, 0, 0, 0, 0, 0, alert.SRM, "split 52.9/47.1, expected 50/50 (p < 0.001)"),
		row(at, "onboarding-v2", "activation", "", "", "test", 800, 0.3, 0.4, -0.3, 1.4, 0.7, alert.Inconclusive, ""),
		// The analyzer's heterogeneity rows: the country explains new-checkout's result
		// (found by discovery), plan and the browser do not.
		het(at, "new-checkout", "purchase conversion", cc, true, 1e-9, "$geoip_country_code: Q = 98.0 on 3 df; "+alert.EffectDiffers),
		het(at, "new-checkout", "revenue per user", cc, true, 1e-5, "$geoip_country_code: Q = 31.2 on 3 df; "+alert.EffectDiffers),
		het(at, "new-checkout", "purchase conversion", "plan", false, 0.4, "plan: Q = 1.8 on 2 df, configured, at α = 0.05: "+alert.NoEvidence),
		het(at, "new-checkout", "purchase conversion", "$browser", true, 0.9, "$browser: Q = 0.4 on 3 df; "+alert.NoEvidence),
	}
	prev = []digest.Row{
		row(before, "new-checkout", "purchase conversion", "", "", "test", 5000, 0.21, -0.02, -0.12, 0.08, 0.3, alert.Inconclusive, ""),
		row(before, "new-checkout", "revenue per user", "", "", "test", 5000, 4.1, -0.03, -0.1, 0.04, 0.2, alert.Inconclusive, ""),
		row(before, "dark-mode", "pageviews", "", "", "test", 2000, 3.3, 0.10, -0.01, 0.21, 0.96, alert.Inconclusive, ""),
	}
	return now, prev
}
