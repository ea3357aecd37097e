package users

import (
	"cmp"
	"context"
	"errors"
	"slices"

	"github.com/flagwatch/flagwatch/pipeline/web"
)

// PageUsers is how many users of each variant the flag page shows: the newest.
const PageUsers = 10

// pageSessions bounds the sessions a user's row on the page shows: the first ones after
// exposure (the API lists them all).
const pageSessions = 5

// maxPageVariants bounds the variants the flag page lists users of.
const maxPageVariants = 20

var _ web.UserLister = (*Lister)(nil)

// Users is the flag page's users tab (web.UserLister): the newest PageUsers users of
// each variant, control first, converted on the flag's primary metric, with their
// sessions and recording links; web.ErrUsersOff for a flag that does not expose its
// users. One read of the flag's exposures and one of those users' events.
func (l *Lister) Users(ctx context.Context, flag string) ([]web.ExposedUser, error) {
	p, err := resolve(l.Monitors, Query{Flag: flag}, "")
	if errors.Is(err, ErrOff) {
		return nil, web.ErrUsersOff
	}
	if err != nil {
		return nil, err
	}
	t := tablesOf(l.Conn)
	cands, err := l.candidates(ctx, p.pageSQL(t, PageUsers*maxPageVariants, PageUsers))
	if err != nil {
		return nil, err
	}
	// Control first, then the variants by name; newest first within each.
	rank := func(v string) int {
		if v == p.flag.Control {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(cands, func(a, b candidate) int {
		return cmp.Or(cmp.Compare(rank(a.variant), rank(b.variant)), cmp.Compare(a.variant, b.variant))
	})
	us, err := l.measure(ctx, p, t, cands)
	if err != nil {
		return nil, err
	}
	if err := l.finish(ctx, p, t, us); err != nil {
		return nil, err
	}
	out := make([]web.ExposedUser, 0, len(us))
	for _, u := range us {
		e := web.ExposedUser{DistinctID: u.DistinctID, Variant: u.Variant, Segments: u.Segments,
			FirstExposure: u.FirstExposure, Converted: u.Converted}
		for i, s := range u.Sessions {
			if i == pageSessions {
				break
			}
			e.Sessions = append(e.Sessions, s.ID)
			if s.Recording != "" {
				e.Recordings = append(e.Recordings, s.Recording)
			}
		}
		out = append(out, e)
	}
	return out, nil
}
