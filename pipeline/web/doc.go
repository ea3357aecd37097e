// Package web is flagwatch's feature-success pages: a flags list, one page per flag
// (verdict and what to do, metrics × variants, lift over time with the always-valid
// band, a forest plot of segments, behaviour-shift cohorts, exposures and the SRM check,
// the alerts and actions timeline, a slot for users and recordings), the same numbers as
// JSON and CSV, and the pages written as static files (WriteReport).
//
// The decision that shapes it: the pages are a read-only view of what the analyzer
// already wrote — the results (analysis_latest for the latest pass, analysis_results for
// the history), alert_log, notification_log and the exposures — read through a small
// Reader whose every query is bounded by a sort key (one row per result key for the
// list; a flag's own range, downsampled, for its history), and rendered server-side with
// html/template and SVG charts (package chart). Nothing is recomputed that the analyzer decided, so
// the page shows exactly the numbers `analyzer once` printed and Slack was told; the
// only numbers computed here are presentation (the observed split, the extra users a
// "wait" needs). No JavaScript build and no CDN: a page works offline and as a file.
package web
