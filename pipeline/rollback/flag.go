package rollback

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/segmentio/encoding/json"

	"github.com/flagwatch/flagwatch/pipeline/config"
)

// FlagAPI reads and changes one PostHog feature flag through the REST API: GET and
// PATCH of {host}/api/projects/{project_id}/feature_flags/{id}/ with a personal API
// key. A progressive rollout changes the flag's release conditions with it.
//
// PostHog's PATCH replaces the whole filters object, so the client keeps what it does
// not interpret as raw JSON (Filters, Group): whoever changes one group's rollout
// percentage sends every other group, multivariate, payloads and any member PostHog
// adds later back exactly as read.
type FlagAPI struct {
	url    string
	apiKey config.Secret
	sender sender
}

// NewFlagAPI returns the client of flag flagID of project projectID on host.
func NewFlagAPI(host, projectID string, flagID int64, apiKey config.Secret, opts Options) *FlagAPI {
	u := fmt.Sprintf("%s/api/projects/%s/feature_flags/%d/", strings.TrimRight(host, "/"), url.PathEscape(projectID), flagID)
	return &FlagAPI{url: u, apiKey: apiKey, sender: newSender("posthog", u, opts)}
}

// Target is the flag's URL, without credentials.
func (c *FlagAPI) Target() string { return c.sender.target }

// Flag is a PostHog feature flag as the API returns it: what a rollout reads, and the
// filters kept raw.
type Flag struct {
	ID     int64
	Key    string
	Active bool
	// Version is PostHog's edit counter (0 from a PostHog that has none); every save
	// of the flag increments it.
	Version   int
	UpdatedAt string
	// ModifiedBy is who saved the flag last, as PostHog names them (email, else name).
	ModifiedBy string
	Filters    Filters
}

// Filters is a flag's filters object. Groups (the release conditions) are decoded one
// level deep; every other member — multivariate, payloads, aggregation_group_type_index,
// super_groups, … — is kept as the raw JSON it arrived as.
type Filters struct {
	Groups []Group
	Rest   map[string]json.RawMessage
}

// Group is one release condition, its members raw: properties, rollout_percentage,
// variant, and whatever else PostHog puts there.
type Group map[string]json.RawMessage

// ErrConflict is a PATCH PostHog refused with 409 Conflict: someone saved the flag's
// conditions after it was read.
var ErrConflict = errors.New("PostHog answered 409 Conflict: the flag was saved by someone else since it was read")

// Get reads the flag. The Outcome says how the call went; the flag is nil unless it is ok.
func (c *FlagAPI) Get(ctx context.Context, flag string) (*Flag, Outcome) {
	out, body, _ := c.sender.sendCode(ctx, flag, func(ctx context.Context) (*http.Request, error) {
		return c.request(ctx, http.MethodGet, nil)
	})
	if out.Status != StatusOK {
		out.Detail = "read flag: " + out.Detail
		return nil, out
	}
	f, err := DecodeFlag(body)
	if err != nil {
		return nil, c.sender.outcome(StatusFailed, "read flag: "+err.Error())
	}
	return f, out
}

// PatchFilters saves filters as the flag's whole filters object. With version > 0 (the
// version read) and the filters read, PostHog refuses the change with 409 when someone
// saved the conditions in between; PatchFilters then returns ErrConflict. It returns
// the flag as PostHog answers it after the change.
func (c *FlagAPI) PatchFilters(ctx context.Context, flag string, filters Filters, version int, original Filters) (*Flag, Outcome, error) {
	var b bytes.Buffer
	b.WriteString(`{"filters":`)
	b.Write(filters.JSON())
	if version > 0 {
		b.WriteString(`,"version":`)
		b.WriteString(strconv.Itoa(version))
		b.WriteString(`,"original_flag":{"filters":`)
		b.Write(original.JSON())
		b.WriteString(`}`)
	}
	b.WriteString(`}`)
	body := b.Bytes()
	out, resp, code := c.sender.sendCode(ctx, flag, func(ctx context.Context) (*http.Request, error) {
		return c.request(ctx, http.MethodPatch, body)
	})
	if code == http.StatusConflict {
		return nil, out, ErrConflict
	}
	if out.Status != StatusOK {
		return nil, out, fmt.Errorf("patch flag: %s", out.Detail)
	}
	f, err := DecodeFlag(resp)
	if err != nil {
		// PostHog took the change; only its answer is unreadable. The caller reads the
		// flag again to know its new state.
		out.Detail += "; answer unreadable: " + err.Error()
		return nil, out, nil
	}
	return f, out, nil
}

func (c *FlagAPI) request(ctx context.Context, method string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey.Reveal())
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// flagWire is what DecodeFlag reads of a flag.
type flagWire struct {
	ID             int64           `json:"id"`
	Key            string          `json:"key"`
	Active         *bool           `json:"active"`
	Version        *int            `json:"version"`
	UpdatedAt      string          `json:"updated_at"`
	Filters        json.RawMessage `json:"filters"`
	LastModifiedBy *struct {
		Email     string `json:"email"`
		FirstName string `json:"first_name"`
	} `json:"last_modified_by"`
}

// DecodeFlag reads a flag from the API's JSON.
func DecodeFlag(b []byte) (*Flag, error) {
	var fj flagWire
	if err := json.Unmarshal(b, &fj); err != nil {
		return nil, fmt.Errorf("decode flag: %w", err)
	}
	if fj.Key == "" {
		return nil, errors.New("decode flag: no key in the answer")
	}
	f := &Flag{ID: fj.ID, Key: fj.Key, Active: fj.Active == nil || *fj.Active, UpdatedAt: fj.UpdatedAt}
	if fj.Version != nil {
		f.Version = *fj.Version
	}
	if m := fj.LastModifiedBy; m != nil {
		f.ModifiedBy = m.Email
		if f.ModifiedBy == "" {
			f.ModifiedBy = m.FirstName
		}
	}
	var err error
	if f.Filters, err = DecodeFilters(fj.Filters); err != nil {
		return nil, err
	}
	return f, nil
}

// DecodeFilters reads a filters object; null or absent is an empty one.
func DecodeFilters(b []byte) (Filters, error) {
	f := Filters{Rest: map[string]json.RawMessage{}}
	if len(bytes.TrimSpace(b)) == 0 || string(bytes.TrimSpace(b)) == "null" {
		return f, nil
	}
	if err := json.Unmarshal(b, &f.Rest); err != nil {
		return f, fmt.Errorf("decode filters: %w", err)
	}
	if g, ok := f.Rest["groups"]; ok {
		delete(f.Rest, "groups")
		if string(bytes.TrimSpace(g)) != "null" {
			if err := json.Unmarshal(g, &f.Groups); err != nil {
				return f, fmt.Errorf("decode filters.groups: %w", err)
			}
		}
	}
	return f, nil
}

// JSON encodes the filters: groups, then the other members by name, each raw member as
// it was read.
func (f Filters) JSON() []byte {
	var b bytes.Buffer
	b.WriteString(`{"groups":[`)
	for i, g := range f.Groups {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(g.JSON())
	}
	b.WriteByte(']')
	for _, k := range sortedKeys(f.Rest) {
		b.WriteByte(',')
		writeMember(&b, k, f.Rest[k])
	}
	b.WriteByte('}')
	return b.Bytes()
}

// JSON encodes the group, its members by name.
func (g Group) JSON() []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range sortedKeys(g) {
		if i > 0 {
			b.WriteByte(',')
		}
		writeMember(&b, k, g[k])
	}
	b.WriteByte('}')
	return b.Bytes()
}

// Clone copies the filters so a change to the copy leaves f as read.
func (f Filters) Clone() Filters {
	out := Filters{Rest: make(map[string]json.RawMessage, len(f.Rest))}
	for k, v := range f.Rest {
		out.Rest[k] = v
	}
	for _, g := range f.Groups {
		out.Groups = append(out.Groups, g.Clone())
	}
	return out
}

// Clone copies the group.
func (g Group) Clone() Group {
	out := make(Group, len(g))
	for k, v := range g {
		out[k] = v
	}
	return out
}

// RolloutPercentage is the share of the users the condition matches who get the flag;
// absent or null means 100, as PostHog reads it.
func (g Group) RolloutPercentage() float64 {
	var p *float64
	if raw, ok := g["rollout_percentage"]; ok {
		if err := json.Unmarshal(raw, &p); err != nil {
			return 100
		}
	}
	if p == nil {
		return 100
	}
	return *p
}

// SetRolloutPercentage sets the condition's rollout percentage.
func (g Group) SetRolloutPercentage(p float64) {
	g["rollout_percentage"] = json.RawMessage(strconv.FormatFloat(p, 'f', -1, 64))
}

// Properties are the condition's property filters, decoded; none for "everyone".
func (g Group) Properties() []map[string]any {
	var ps []map[string]any
	if raw, ok := g["properties"]; ok {
		_ = json.Unmarshal(raw, &ps)
	}
	return ps
}

// Variant is the condition's variant override ("" for none).
func (g Group) Variant() string {
	var v *string
	if raw, ok := g["variant"]; ok {
		_ = json.Unmarshal(raw, &v)
	}
	if v == nil {
		return ""
	}
	return *v
}

// Canonical is the filters as a canonical JSON text (objects' members sorted, numbers
// and strings as JSON reads them), for comparing two readings of a flag regardless of
// member order and spacing.
func (f Filters) Canonical() string {
	var v any
	if err := json.Unmarshal(f.JSON(), &v); err != nil {
		return string(f.JSON())
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func writeMember(b *bytes.Buffer, k string, v json.RawMessage) {
	key, _ := json.Marshal(k)
	b.Write(key)
	b.WriteByte(':')
	if len(bytes.TrimSpace(v)) == 0 {
		b.WriteString("null")
		return
	}
	b.Write(v)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
