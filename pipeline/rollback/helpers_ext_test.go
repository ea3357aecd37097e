package rollback_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newStub answers 204 to everything and hands each request and its body to seen.
func newStub(t *testing.T, seen func(*http.Request, []byte)) *httptest.Server {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		seen(r, b)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.Close)
	return s
}
