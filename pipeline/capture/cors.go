package capture

import (
	"net/http"
	"slices"
)

// allowCORS lets browsers (posthog-js) post from any origin without credentials: capture
// reads no cookie and answers nothing private, so a page on any site may send events,
// but no site gets credentialed access by reflection. PostHog's own capture mirrors any
// Origin with Allow-Credentials: true; here only the origins listed in
// Options.CORSCredentialOrigins (the sites whose posthog-js falls back to XHR, which sends
// with credentials unless __preview_disable_xhr_credentials is set) get credentials.
func (h *Handler) allowCORS(w http.ResponseWriter, r *http.Request) {
	h.setCORS(w.Header(), r)
}

func (h *Handler) setCORS(hd http.Header, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return
	}
	if !slices.Contains(hd.Values("Vary"), "Origin") {
		hd.Add("Vary", "Origin")
	}
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

// corsHeaders are the headers of PostHog's answers that capture's CORS policy replaces.
var corsHeaders = []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials",
	"Access-Control-Allow-Methods", "Access-Control-Allow-Headers", "Access-Control-Max-Age"}

// proxyCORS applies the same policy to PostHog's answers in proxy mode, the one change
// made to them: PostHog reflects any origin with credentials, which would let every
// site make credentialed requests to the customer's own domain. Answers to requests
// without an Origin (servers, SDKs outside browsers) are left as PostHog sent them.
func (h *Handler) proxyCORS(hd http.Header, r *http.Request) {
	if r.Header.Get("Origin") == "" {
		return
	}
	for _, k := range corsHeaders {
		hd.Del(k)
	}
	h.setCORS(hd, r)
}
