package retention

import (
	"encoding/json"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	valid := []struct {
		in   string
		want Duration
		str  string
	}{
		{"7d", Duration{Days: 7}, "7d"},
		{"1y2m3d4h", Duration{1, 2, 3, 4}, "1y2m3d4h"},
		{"1y6m", Duration{Years: 1, Months: 6}, "1y6m"},
		{"2d12h", Duration{Days: 2, Hours: 12}, "2d12h"},
		{"36h", Duration{Hours: 36}, "36h"},
		{"0d", Duration{}, "0d"},
		{"0y0m7d", Duration{Days: 7}, "7d"},
		{"1000000h", Duration{Hours: 1000000}, "1000000h"},
	}
	for _, c := range valid {
		got, err := ParseDuration(c.in)
		if err != nil {
			t.Errorf("ParseDuration(%q): %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("ParseDuration(%q) = %+v, want %+v", c.in, got, c.want)
		}
		if got.String() != c.str {
			t.Errorf("ParseDuration(%q).String() = %q, want %q", c.in, got.String(), c.str)
		}
	}
	for _, in := range []string{"", "7", "d", "7w", "7D", "-7d", "+7d", " 7d", "7d ", "1d1y", "1d2d", "1h1d", "1000001d", "99999999999999999999d", "1.5d", "7dd"} {
		if d, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %+v, want an error", in, d)
		}
	}
}

func TestDurationText(t *testing.T) {
	var v struct{ D Duration }
	if err := json.Unmarshal([]byte(`{"D":"1y3d"}`), &v); err != nil {
		t.Fatal(err)
	}
	if v.D != (Duration{Years: 1, Days: 3}) {
		t.Fatalf("unmarshalled %+v", v.D)
	}
	b, err := json.Marshal(v)
	if err != nil || string(b) != `{"D":"1y3d"}` {
		t.Fatalf("marshalled %s, %v", b, err)
	}
	if err := json.Unmarshal([]byte(`{"D":"3 days"}`), &v); err == nil {
		t.Error("unmarshalled an invalid duration")
	}
	var flag Duration
	if err := flag.Set("2m"); err != nil || flag != (Duration{Months: 2}) {
		t.Errorf("Set(2m) = %+v, %v", flag, err)
	}
}

func mustZone(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("load time zone %s: %v", name, err)
	}
	return loc
}

func TestDurationBefore(t *testing.T) {
	berlin := mustZone(t, "Europe/Berlin")
	ny := mustZone(t, "America/New_York")
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		name string
		d    string
		from time.Time
		loc  *time.Location
		want time.Time
	}{
		{"month back clamps to end of February", "1m", utc("2026-03-31T12:00:00Z"), time.UTC, utc("2026-02-28T12:00:00Z")},
		{"month back clamps to leap day", "1m", utc("2028-03-31T12:00:00Z"), time.UTC, utc("2028-02-29T12:00:00Z")},
		{"year back from leap day", "1y", utc("2028-02-29T08:00:00Z"), time.UTC, utc("2027-02-28T08:00:00Z")},
		{"months cross a year", "14m", utc("2027-01-15T00:00:00Z"), time.UTC, utc("2025-11-15T00:00:00Z")},
		{"days after months", "1m1d", utc("2026-03-31T12:00:00Z"), time.UTC, utc("2026-02-27T12:00:00Z")},
		// 29 March 2026 is 23 hours long in Berlin: 12:00 CEST back one day
		// is 12:00 CET the day before.
		{"a day is 23 hours across spring forward", "1d", utc("2026-03-29T10:00:00Z"), berlin, utc("2026-03-28T11:00:00Z")},
		{"24 hours stay 24 hours", "24h", utc("2026-03-29T10:00:00Z"), berlin, utc("2026-03-28T10:00:00Z")},
		// 1 November 2026 is 25 hours long in New York.
		{"a day is 25 hours across fall back", "1d", utc("2026-11-01T17:00:00Z"), ny, utc("2026-10-31T16:00:00Z")},
		{"the same day in UTC is 24 hours", "1d", utc("2026-11-01T17:00:00Z"), time.UTC, utc("2026-10-31T17:00:00Z")},
		{"nil location is UTC", "1d", utc("2026-11-01T17:00:00Z"), nil, utc("2026-10-31T17:00:00Z")},
		{"all units", "1y2m3d4h", utc("2027-05-10T10:00:00Z"), time.UTC, utc("2026-03-07T06:00:00Z")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := ParseDuration(c.d)
			if err != nil {
				t.Fatal(err)
			}
			if got := d.Before(c.from, c.loc); !got.Equal(c.want) {
				t.Errorf("%s before %v in %v = %v, want %v", c.d, c.from, c.loc, got.UTC(), c.want)
			}
		})
	}
}
