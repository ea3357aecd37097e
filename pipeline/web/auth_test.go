package web_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/config"
	"github.com/flagwatch/flagwatch/pipeline/web"
)

// oneFlag is a Reader with one flag and no results: the auth layer in front of it is
// what is under test, not the reads.
type oneFlag struct{}

func (oneFlag) Flags(context.Context) ([]web.FlagState, error) {
	return []web.FlagState{{Key: "new-checkout"}}, nil
}

func (oneFlag) Flag(_ context.Context, key string) (*web.FlagData, error) {
	if key != "new-checkout" {
		return &web.FlagData{Key: key}, nil
	}
	return &web.FlagData{Key: key, Activity: &web.Activity{First: time.Unix(0, 0), Last: time.Unix(0, 0)}}, nil
}

// With FLAGWATCH_UI_TOKEN set, every page and API needs the token, as a bearer token or
// as the basic-auth password (a browser's prompt); without it, 401 and a prompt.
func TestToken(t *testing.T) {
	mons, err := config.Parse(nil, "")
	require.NoError(t, err)
	const token = "s3cret-t0ken"
	srv := httptest.NewServer(web.Handler(web.Options{Reader: oneFlag{}, Monitors: mons, Token: token, Logger: quiet}))
	defer srv.Close()
	do := func(path string, set func(*http.Request)) (int, http.Header, string) {
		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		if set != nil {
			set(req)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	for _, path := range []string{"/", "/flags/new-checkout", "/api/flags", "/api/flags/new-checkout", "/api/flags/new-checkout/results.csv"} {
		code, h, body := do(path, nil)
		require.Equal(t, http.StatusUnauthorized, code, path)
		require.Contains(t, h.Get("WWW-Authenticate"), `Basic realm="flagwatch"`)
		require.NotContains(t, body, token)
		for name, set := range map[string]func(*http.Request){
			"wrong bearer":   func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") },
			"prefix":         func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token[:5]) },
			"longer":         func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token+"x") },
			"wrong password": func(r *http.Request) { r.SetBasicAuth("pm", "nope") },
			"token as user":  func(r *http.Request) { r.SetBasicAuth(token, "") },
		} {
			code, _, _ := do(path, set)
			require.Equal(t, http.StatusUnauthorized, code, "%s %s", name, path)
		}
		code, _, body = do(path, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+token) })
		require.Equal(t, http.StatusOK, code, "%s: %s", path, body)
		code, _, _ = do(path, func(r *http.Request) { r.Header.Set("Authorization", "bearer "+token) })
		require.Equal(t, http.StatusOK, code, "the scheme is case-insensitive")
		code, _, _ = do(path, func(r *http.Request) { r.SetBasicAuth("any-name", token) })
		require.Equal(t, http.StatusOK, code, "basic auth with the token as password")
	}
	// Without a token the pages are open (bind the analyzer to a private address).
	open := httptest.NewServer(web.Handler(web.Options{Reader: oneFlag{}, Monitors: mons, Logger: quiet}))
	defer open.Close()
	resp, err := http.Get(open.URL + "/")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, strings.HasPrefix(resp.Header.Get("Content-Security-Policy"), "default-src 'none'"))
}

type listed []web.ExposedUser

func (l listed) Users(context.Context, string) ([]web.ExposedUser, error) { return l, nil }

type usersOff struct{}

func (usersOff) Users(context.Context, string) ([]web.ExposedUser, error) {
	return nil, web.ErrUsersOff
}

// The users-and-recordings tab: off by default with how to turn it on; with a lister,
// the users, escaped like every other text, recordings as links.
func TestUsersSlot(t *testing.T) {
	mons, err := config.Parse(nil, "")
	require.NoError(t, err)
	get := func(o web.Options) string {
		srv := httptest.NewServer(web.Handler(o))
		defer srv.Close()
		resp, err := http.Get(srv.URL + "/flags/new-checkout")
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
		return string(b)
	}
	off := get(web.Options{Reader: oneFlag{}, Monitors: mons, Logger: quiet})
	require.Contains(t, off, `id="users-off"`)
	require.Contains(t, off, "expose_users: true")
	on := get(web.Options{Reader: oneFlag{}, Monitors: mons, Logger: quiet, Users: listed{{DistinctID: "<b>u1</b>", Variant: "test",
		FirstExposure: time.Unix(0, 0), Converted: true, Sessions: []string{"s-1"}, Recordings: []string{"https://eu.posthog.com/replay/s-1"}}}})
	require.NotContains(t, on, `id="users-off"`)
	require.Contains(t, on, "&lt;b&gt;u1&lt;/b&gt;")
	require.Contains(t, on, `href="https://eu.posthog.com/replay/s-1"`)
	require.Contains(t, on, `id="users-api"`, "the API's links")
	// A lister that says the flag's users are not exposed: the tab says how to.
	off = get(web.Options{Reader: oneFlag{}, Monitors: mons, Logger: quiet, Users: usersOff{}})
	require.Contains(t, off, `id="users-off"`)
	require.Contains(t, off, "expose_users: true")
}
