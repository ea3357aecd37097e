package users_test

import (
	"context"
	"encoding/csv"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/encoding/json"
	"github.com/stretchr/testify/require"

	"github.com/flagwatch/flagwatch/pipeline/users"
	"github.com/flagwatch/flagwatch/pipeline/web"
)

const token = "ui-token"

// serve mounts the pages and the users API the way analyzer run does.
func serve(t *testing.T, f *fixture) *httptest.Server {
	l := &users.Lister{Conn: f.conn, Monitors: f.mons}
	mux := http.NewServeMux()
	mux.Handle("/", web.Handler(web.Options{Conn: f.conn, Monitors: f.mons, Token: token, Users: l, Logger: quiet,
		Now: func() time.Time { return f.now }}))
	api := web.Secure(token, users.Handler(l, quiet))
	for _, p := range users.Patterns {
		mux.Handle(p, api)
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, srv *httptest.Server, path string, auth bool) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	require.NoError(t, err)
	if auth {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, resp.Header, string(b)
}

type apiPage struct {
	users.Page
	Next string `json:"next"`
}

// The API answers what List answers, as JSON with the next page's URL and as CSV with a
// Link header, behind the pages' token.
func testAPI(t *testing.T, f *fixture) {
	srv := serve(t, f)
	path := "/api/flags/new-checkout/users?variant=test&segment=" + url.QueryEscape("$geoip_country_code:GB") + "&converted=false&limit=50"
	code, _, body := get(t, srv, path, false)
	require.Equal(t, http.StatusUnauthorized, code, "the pages' token guards the users")
	require.NotContains(t, body, "user-")

	l := &users.Lister{Conn: f.conn, Monitors: f.mons}
	q := users.Query{Flag: "new-checkout", Variant: "test", Segments: []users.Segment{{Property: "$geoip_country_code", Value: "GB"}},
		Converted: ptr(false), Limit: 50}
	want, err := l.List(context.Background(), q)
	require.NoError(t, err)

	code, h, body := get(t, srv, path, true)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "application/json", h.Get("Content-Type"))
	require.Equal(t, "no-store", h.Get("Cache-Control"))
	var got apiPage
	require.NoError(t, json.Unmarshal([]byte(body), &got))
	require.Equal(t, want.Users, got.Users)
	require.Equal(t, "purchase conversion", got.Metric)
	require.Equal(t, "7d", got.Window)
	require.Equal(t, []string{"$geoip_country_code", "plan"}, got.SegmentProperties)
	require.NotEmpty(t, got.Next)

	// The next page is the page after the cursor.
	q.Cursor = want.NextCursor
	want2, err := l.List(context.Background(), q)
	require.NoError(t, err)
	code, _, body = get(t, srv, got.Next, true)
	require.Equal(t, http.StatusOK, code, body)
	var got2 apiPage
	require.NoError(t, json.Unmarshal([]byte(body), &got2))
	require.Equal(t, want2.Users, got2.Users)
	require.NotEqual(t, got.Users[0].DistinctID, got2.Users[0].DistinctID)

	// CSV: the same users, a header, the recording links, the next page in Link.
	csvPath := strings.Replace(path, "/users?", "/users.csv?", 1)
	code, h, body = get(t, srv, csvPath, true)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, "text/csv; charset=utf-8", h.Get("Content-Type"))
	require.Contains(t, h.Get("Content-Disposition"), `filename="new-checkout-users.csv"`)
	require.Regexp(t, `^</api/flags/new-checkout/users\.csv\?.*cursor=.*>; rel="next"$`, h.Get("Link"))
	recs, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	require.NoError(t, err)
	require.Equal(t, []string{"distinct_id", "variant", "first_exposure", "$geoip_country_code", "plan", "metric", "converted", "value", "sessions", "recordings"}, recs[0])
	require.Len(t, recs, 51)
	for i, r := range recs[1:] {
		u := want.Users[i]
		require.Equal(t, u.DistinctID, r[0])
		require.Equal(t, []string{"test", u.FirstExposure.Format(time.RFC3339Nano), "GB", u.Segments["plan"], "purchase conversion", "false", "0"}, r[1:8])
		var ids, links []string
		for _, s := range u.Sessions {
			ids, links = append(ids, s.ID), append(links, users.RecordingLink(recordings, s.ID, u.DistinctID))
		}
		require.Equal(t, strings.Join(ids, " "), r[8])
		require.Equal(t, strings.Join(links, " "), r[9])
	}
}

// A bad parameter is a 400 that says what is wrong and what is wanted; a name is checked
// against the monitors and a value is quoted, so SQL in a parameter is refused or
// matches nothing; a flag that does not expose its users is a 404 that says how to.
func testAPIErrors(t *testing.T, f *fixture) {
	srv := serve(t, f)
	base := "/api/flags/new-checkout/users?"
	for _, tc := range []struct{ query, want string }{
		{"segment=GB", `segment "GB": want property:value, e.g. $geoip_country_code:GB`},
		{"segment=" + url.QueryEscape("country:GB"), `segment "country:GB": "country" is not a segment property of new-checkout (want $geoip_country_code, plan, $exposure_day)`},
		{"segment=" + url.QueryEscape("plan') OR 1=1 --:x"), `"plan') OR 1=1 --" is not a segment property of new-checkout`},
		{"segment=" + url.QueryEscape("plan:free") + "&segment=" + url.QueryEscape("plan:pro"), `segment "plan:pro": plan is filtered on twice`},
		{"segment=" + url.QueryEscape("$exposure_day:yesterday"), `an exposure day is a date, 2006-01-02`},
		{"segmnet=" + url.QueryEscape("plan:free"), `unknown parameter "segmnet" (did you mean "segment"?): want variant, segment, metric, converted, sort, limit, cursor`},
		{"metric=revenue", `unknown metric "revenue" of new-checkout: want one of pageviews, purchase conversion, revenue per user, revenue per order`},
		{"variant=treatment", `unknown variant "treatment" of new-checkout: want control or test`},
		{"variant=" + url.QueryEscape("$multiple"), `variant $multiple: users who saw two or more variants of new-checkout are left out of every comparison`},
		{"converted=maybe", `converted "maybe": want true or false`},
		{"limit=5000", `limit "5000": want a number from 1 to 1000`},
		{"limit=10&limit=20", `parameter "limit" given 2 times`},
		{"sort=newest", `unknown sort "newest": want -first_exposure, first_exposure, -value, value`},
		{"cursor=bm90LWEtY3Vyc29y", `cursor "bm90LWEtY3Vyc29y" is not a next_cursor of this query (start again without one)`},
	} {
		code, h, body := get(t, srv, base+tc.query, true)
		require.Equal(t, http.StatusBadRequest, code, "%s: %s", tc.query, body)
		require.Equal(t, "application/json", h.Get("Content-Type"))
		var e struct{ Error string }
		require.NoError(t, json.Unmarshal([]byte(body), &e))
		require.Contains(t, e.Error, tc.want, tc.query)
		code, _, body = get(t, srv, strings.Replace(base, "/users?", "/users.csv?", 1)+tc.query, true)
		require.Equal(t, http.StatusBadRequest, code, tc.query)
		require.Contains(t, body, tc.want)
	}
	// A cursor from another query.
	l := &users.Lister{Conn: f.conn, Monitors: f.mons}
	p, err := l.List(context.Background(), users.Query{Flag: "new-checkout", Variant: "control", Limit: 5})
	require.NoError(t, err)
	code, _, body := get(t, srv, base+"variant=test&cursor="+p.NextCursor, true)
	require.Equal(t, http.StatusBadRequest, code, body)
	require.Contains(t, body, "is not a next_cursor of this query")

	// Values are quoted: quotes, backslashes and newlines match nothing, on both engines.
	for _, v := range []string{"GB' OR '1'='1", `GB\' OR 1=1 --`, "GB\n OR 1", "'; DROP TABLE events; --"} {
		code, _, body := get(t, srv, base+"segment="+url.QueryEscape("$geoip_country_code:"+v), true)
		require.Equal(t, http.StatusOK, code, body)
		var got apiPage
		require.NoError(t, json.Unmarshal([]byte(body), &got))
		require.Empty(t, got.Users, v)
		code, _, body = get(t, srv, base+"variant=test&metric="+url.QueryEscape("revenue per user")+"&segment="+url.QueryEscape("plan:"+v)+"&sort=-value", true)
		require.Equal(t, http.StatusOK, code, body)
	}
	var n uint64
	require.NoError(t, f.conn.QueryRow(context.Background(), "SELECT count() FROM events").Scan(&n))
	require.Positive(t, n)

	code, _, body = get(t, srv, "/api/flags/new-onboarding/users", true)
	require.Equal(t, http.StatusNotFound, code)
	require.Contains(t, body, `listing users is off for flag \"new-onboarding\": set expose_users: true in the monitors file`)
	code, _, body = get(t, srv, "/api/flags/new-onboarding/users.csv", true)
	require.Equal(t, http.StatusNotFound, code)
	require.Contains(t, body, "set expose_users: true")
}

// The flag page's users tab: the newest users of each variant, control first, with
// links to their recordings and to the API; a flag that does not expose its users says
// how to turn it on.
func testPage(t *testing.T, f *fixture) {
	l := &users.Lister{Conn: f.conn, Monitors: f.mons}
	ctx := context.Background()
	us, err := l.Users(ctx, "new-checkout")
	require.NoError(t, err)
	require.Len(t, us, 2*users.PageUsers)
	for i, v := range []string{"control", "test"} {
		p, err := l.List(ctx, users.Query{Flag: "new-checkout", Variant: v, Limit: users.PageUsers})
		require.NoError(t, err)
		for k, u := range p.Users {
			e := us[i*users.PageUsers+k]
			require.Equal(t, u.DistinctID, e.DistinctID)
			require.Equal(t, v, e.Variant)
			require.Equal(t, u.Converted, e.Converted)
			require.Equal(t, u.Segments, e.Segments)
			require.Len(t, e.Recordings, len(e.Sessions))
			for j, s := range e.Sessions {
				require.Equal(t, users.RecordingLink(recordings, s, u.DistinctID), e.Recordings[j])
			}
		}
	}
	_, err = l.Users(ctx, "new-onboarding")
	require.ErrorIs(t, err, web.ErrUsersOff)

	srv := serve(t, f)
	code, _, body := get(t, srv, "/flags/new-checkout", true)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `<th>Converted <span class="muted small">(purchase conversion)</span></th>`)
	require.Contains(t, body, `<td class="key">`+us[0].DistinctID+`</td>`)
	require.Contains(t, body, `<a href="`+us[0].Recordings[0]+`" rel="noopener noreferrer" title="watch the recording">▶ `+us[0].Sessions[0]+`</a>`)
	require.Contains(t, body, `id="users-api"`)
	require.Contains(t, body, `<a href="../api/flags/new-checkout/users">JSON</a>`)
	require.NotContains(t, body, `id="users-off"`)
	code, _, body = get(t, srv, "/flags/new-onboarding", true)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, `id="users-off"`)
	require.Contains(t, body, "expose_users: true")
}
