package store

import "strings"

// Quote renders s as a ClickHouse string literal. flagwatch builds its SQL with literals
// rather than driver-side parameters, because the embedded engine has none and 18.16 has
// no server-side parameters; every value from events, configuration or a request goes
// through Quote (or QuoteList), never into SQL by itself.
func Quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('\'')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '\'':
			b.WriteString(`\'`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case 0:
			b.WriteString(`\0`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// QuoteList renders ss as a ClickHouse array literal of strings: ['a', 'b'].
func QuoteList(ss []string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, s := range ss {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(Quote(s))
	}
	b.WriteByte(']')
	return b.String()
}

// QuoteIdent renders s as a ClickHouse identifier in backquotes.
func QuoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }
