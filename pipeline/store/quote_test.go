package store

import "testing"

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"":                    `''`,
		"it's":                `'it\'s'`,
		`back\slash`:          `'back\\slash'`,
		"new\nline\r\ttab":    `'new\nline\r\ttab'`,
		"nul\x00":             `'nul\0'`,
		`\'; DROP TABLE x --`: `'\\\'; DROP TABLE x --'`,
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
	if got := QuoteList([]string{"a", "b'c"}); got != `['a', 'b\'c']` {
		t.Errorf("QuoteList = %s", got)
	}
	if got := QuoteIdent("we`ird"); got != "`we``ird`" {
		t.Errorf("QuoteIdent = %s", got)
	}
}
