package capture

import "net/http"

// allowCORS lets browsers (posthog-js) post from any origin without credentials: capture
// reads no cookie and answers nothing private, so a page on any site may send events,
// but no site gets credentialed access by reflection. PostHog's own capture mirrors any
// Origin with Allow-Credentials: true; here only the origins listed in
// Options.CORSCredentialOrigins (the sites whose posthog-js falls back to XHR, which sends
// with credentials unless __preview_disable_xhr_credentials is set) get credentials.
func (h *Handler) allowCORS(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return
	}
	hd := w.Header()
	hd.Add("Vary", "Origin")
	if h.cors[origin] {
		hd.Set("Access-Control-Allow-Origin", origin)
		hd.Set("Access-Control-Allow-Credentials", "true")
	} else {
		hd.Set("Access-Control-Allow-Origin", "*")
	}
	if r.Method != http.MethodOptions {
		return
	}
	hd.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
	allowed := r.Header.Get("Access-Control-Request-Headers")
	if allowed == "" {
		allowed = "Content-Type, Content-Encoding, Authorization"
	}
	hd.Set("Access-Control-Allow-Headers", allowed)
	hd.Set("Access-Control-Max-Age", "86400")
}
