package retention

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// maxComponent bounds each number of a Duration. A million hours is 114
// years, well inside time.Duration's ±292 years, so subtracting the hours
// cannot overflow; a million years is beyond any real retention.
const maxComponent = 1_000_000

// Duration is a calendar duration: years, months, days and hours, written
// as "1y2m3d4h" (restic's form). It is not a fixed number of seconds: a
// month back from 31 March is 28 or 29 February, and a day back across a
// daylight-saving change is 23 or 25 hours. See Before for the exact rules.
//
// Duration implements encoding.TextMarshaler and *Duration
// encoding.TextUnmarshaler, in the form of ParseDuration.
type Duration struct {
	Years, Months, Days, Hours int
}

// ParseDuration parses a calendar duration: one or more groups of decimal
// digits, each followed by a unit, y (years), m (months), d (days) or h
// (hours), in that order and each at most once, as in "7d", "1y6m" or
// "2d12h". Signs, spaces, other units and numbers above 1,000,000 are
// errors.
func ParseDuration(s string) (Duration, error) {
	var d Duration
	if s == "" {
		return d, errors.New("retention: empty duration: want e.g. 7d, 1y6m or 2d12h")
	}
	fields := []struct {
		unit byte
		dst  *int
	}{{'y', &d.Years}, {'m', &d.Months}, {'d', &d.Days}, {'h', &d.Hours}}
	rest, next := s, 0
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 {
			return Duration{}, fmt.Errorf("retention: invalid duration %q: expected a number at %q", s, rest)
		}
		if i == len(rest) {
			return Duration{}, fmt.Errorf("retention: invalid duration %q: number %s has no unit (y, m, d or h)", s, rest)
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil || n > maxComponent {
			return Duration{}, fmt.Errorf("retention: invalid duration %q: %s is larger than %d", s, rest[:i], maxComponent)
		}
		unit := rest[i]
		j := next
		for j < len(fields) && fields[j].unit != unit {
			j++
		}
		if j == len(fields) {
			return Duration{}, fmt.Errorf("retention: invalid duration %q: unit %q is unknown, repeated or out of order (want y, m, d, h in that order)", s, unit)
		}
		*fields[j].dst = n
		next = j + 1
		rest = rest[i+1:]
	}
	return d, nil
}

// String returns d in the form ParseDuration reads, leaving out zero
// components ("1y6m", "7d"); the zero Duration is "0d".
func (d Duration) String() string {
	var b strings.Builder
	for _, c := range []struct {
		n    int
		unit string
	}{{d.Years, "y"}, {d.Months, "m"}, {d.Days, "d"}, {d.Hours, "h"}} {
		if c.n != 0 {
			b.WriteString(strconv.Itoa(c.n))
			b.WriteString(c.unit)
		}
	}
	if b.Len() == 0 {
		return "0d"
	}
	return b.String()
}

// IsZero reports whether d is zero, which in a Policy means "not set".
func (d Duration) IsZero() bool { return d == Duration{} }

// Set parses s into d; on error d is unchanged.
func (d *Duration) Set(s string) error {
	v, err := ParseDuration(s)
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalText encodes d as String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText decodes the form ParseDuration reads.
func (d *Duration) UnmarshalText(b []byte) error { return d.Set(string(b)) }

// valid reports whether every component is between 0 and maxComponent (a
// Duration built by hand, not by ParseDuration, may be out of range).
func (d Duration) valid() bool {
	for _, n := range []int{d.Years, d.Months, d.Days, d.Hours} {
		if n < 0 || n > maxComponent {
			return false
		}
	}
	return true
}

// Before returns the instant d before t, computed on the wall clock of
// loc, in three steps:
//
//  1. Years and months are subtracted from the calendar month; the day of
//     the month is clamped to the length of the month reached (31 March
//     minus 1m is 28 February, or 29 in a leap year), and the wall-clock
//     time is kept.
//  2. Days are subtracted as calendar days, keeping the wall-clock time, so
//     across a daylight-saving change one day is 23 or 25 hours.
//  3. Hours are subtracted as elapsed hours (3600 seconds each).
//
// A wall-clock time that does not exist in loc (inside the hour skipped
// when clocks go forward) is normalised as time.Date does. A nil loc means
// UTC.
func (d Duration) Before(t time.Time, loc *time.Location) time.Time {
	if loc == nil {
		loc = time.UTC
	}
	t = t.In(loc)
	y, m, day := t.Date()
	hh, mm, ss := t.Clock()
	months := y*12 + int(m-1) - (d.Years*12 + d.Months)
	ny, nm := floorDiv(months, 12), time.Month(months-floorDiv(months, 12)*12+1)
	if last := daysIn(ny, nm); day > last {
		day = last
	}
	r := time.Date(ny, nm, day-d.Days, hh, mm, ss, t.Nanosecond(), loc)
	return r.Add(-time.Duration(d.Hours) * time.Hour)
}

// daysIn returns the number of days of month m in year y.
func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

func floorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}
