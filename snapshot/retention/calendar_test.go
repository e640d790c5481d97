package retention

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// splitmix is a tiny deterministic generator (SplitMix64): the calendar
// must not change when the standard library's generators do.
type splitmix uint64

func (s *splitmix) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (s *splitmix) intn(n int) int { return int(s.next() % uint64(n)) }

// chance reports true with probability pct percent.
func (s *splitmix) chance(pct int) bool { return s.intn(100) < pct }

// Calendar bounds: two years, 1 March 2025 to 28 February 2027. They cover
// four daylight-saving changes in Europe/Berlin and America/New_York each,
// two year boundaries, 29–31 December 2025 (ISO week 1 of 2026) and ISO
// week 53 of 2026 (28 December 2026 to 3 January 2027).
var (
	calendarStart = time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	calendarEnd   = time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
)

// calendar returns the synthetic snapshots of the golden tests, in no
// particular order. Sources:
//
//   - alpha /home (Berlin): nightly between 01:00 and 04:00 elapsed after
//     local midnight, tag "nightly"; 8% of nights missed; no backups on
//     4–24 August 2025 and 13 July–2 August 2026.
//   - alpha /etc (Berlin): Sundays about 04:00, tag "weekly"; before the
//     first backup of some months a manual snapshot tagged "pre-upgrade".
//   - beta /srv/db + /srv/www (New York): on 35% of days, one to four
//     snapshots at any time of day, 20% tagged "db"; no backups on
//     10 May–20 June 2025 and 20 January–25 February 2026.
//   - gamma /dev/sda (UTC, kind image): every 20 to 40 days.
//   - delta /Users/me (a laptop whose times are stored in Tokyo and Lisbon
//     time): about weekly, at any time of day.
//   - Hand-placed snapshots at the daylight-saving changes, at the year
//     boundaries, in ISO week 53, and two snapshots of beta with the same
//     time.
func calendar(t testing.TB) []Item {
	berlin := mustZone(t, "Europe/Berlin")
	ny := mustZone(t, "America/New_York")
	tokyo := mustZone(t, "Asia/Tokyo")
	lisbon := mustZone(t, "Europe/Lisbon")
	rng := splitmix(20250301)
	var out []Item
	add := func(host string, paths []string, kind string, tm time.Time, tags ...string) {
		out = append(out, Item{ID: fmt.Sprintf("%012x", rng.next()>>16), Time: tm, Host: host, Paths: paths, Tags: tags, Kind: kind})
	}
	home, etc, srv, sda, mac := []string{"/home"}, []string{"/etc"}, []string{"/srv/db", "/srv/www"}, []string{"/dev/sda"}, []string{"/Users/me"}
	between := func(d time.Time, from, to string) bool {
		s := d.Format("2006-01-02")
		return s >= from && s <= to
	}
	// midnight returns local midnight of the UTC date d in loc; midnight is
	// never skipped or repeated in these zones, so it is unambiguous.
	midnight := func(d time.Time, loc *time.Location) time.Time {
		return time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, loc)
	}
	secs := func(from, to int) time.Duration { return time.Duration(from+rng.intn(to-from)) * time.Second }

	lastMonth := time.Month(0)
	for d := calendarStart; d.Before(calendarEnd); d = d.AddDate(0, 0, 1) {
		if !between(d, "2025-08-04", "2025-08-24") && !between(d, "2026-07-13", "2026-08-02") && !rng.chance(8) {
			add("alpha", home, "files", midnight(d, berlin).Add(secs(3600, 4*3600)), "nightly")
		}
		if d.Weekday() == time.Sunday {
			sunday := midnight(d, berlin)
			if d.Month() != lastMonth && rng.chance(40) {
				add("alpha", etc, "files", sunday.Add(secs(3*3600, 4*3600)), "pre-upgrade")
			}
			lastMonth = d.Month()
			add("alpha", etc, "files", sunday.Add(secs(4*3600, 4*3600+600)), "weekly")
		}
		if !between(d, "2025-05-10", "2025-06-20") && !between(d, "2026-01-20", "2026-02-25") && rng.chance(35) {
			for n := 1 + rng.intn(4); n > 0; n-- {
				var tags []string
				if rng.chance(20) {
					tags = []string{"db"}
				}
				add("beta", srv, "files", midnight(d, ny).Add(secs(0, 24*3600)), tags...)
			}
		}
		if rng.chance(14) {
			loc := tokyo
			if rng.chance(50) {
				loc = lisbon
			}
			add("delta", mac, "files", midnight(d, time.UTC).Add(secs(0, 24*3600)).In(loc))
		}
	}
	for d := calendarStart.AddDate(0, 0, 3); d.Before(calendarEnd); d = d.AddDate(0, 0, 20+rng.intn(21)) {
		add("gamma", sda, "image", d.Add(secs(0, 24*3600)))
	}

	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	special := []struct {
		host string
		when string
		loc  *time.Location
	}{
		// Berlin, 26 October 2025: 02:15 and 02:45 CEST, then the same wall
		// times again in CET.
		{"alpha", "2025-10-26T00:15:00Z", berlin}, {"alpha", "2025-10-26T00:45:00Z", berlin},
		{"alpha", "2025-10-26T01:15:00Z", berlin}, {"alpha", "2025-10-26T01:45:00Z", berlin},
		// Berlin, 29 March 2026: 01:59 CET, then 03:01 CEST two minutes later.
		{"alpha", "2026-03-29T00:59:00Z", berlin}, {"alpha", "2026-03-29T01:01:00Z", berlin},
		// Berlin, new year: 23:59:59 CET on 31 December 2025 and 00:00:01
		// on 1 January 2026 (both 31 December in UTC).
		{"alpha", "2025-12-31T22:59:59Z", berlin}, {"alpha", "2025-12-31T23:00:01Z", berlin},
		{"alpha", "2026-12-31T22:59:59Z", berlin}, {"alpha", "2026-12-31T23:00:01Z", berlin},
		// New York, 2 November 2025: 01:30 EDT, then 01:30 EST.
		{"beta", "2025-11-02T05:30:00Z", ny}, {"beta", "2025-11-02T06:30:00Z", ny},
		// New York, 8 March 2026: 01:59 EST, then 03:01 EDT.
		{"beta", "2026-03-08T06:59:00Z", ny}, {"beta", "2026-03-08T07:01:00Z", ny},
		// ISO week 53 of 2026: Monday 28 December and Sunday 3 January.
		{"beta", "2026-12-28T15:00:00Z", ny}, {"beta", "2027-01-03T23:30:00Z", ny},
		{"beta", "2027-01-04T05:30:00Z", ny}, // 00:30 EST on Monday, 2027-W01
	}
	for _, s := range special {
		paths := srv
		if s.host == "alpha" {
			paths = home
		}
		add(s.host, paths, "files", utc(s.when).In(s.loc))
	}
	// Two snapshots of beta with the same time: the smaller ID counts as
	// the newer one.
	tie := utc("2026-05-05T15:00:00Z").In(ny)
	out = append(out,
		Item{ID: "bbbbbbbbbbbb", Time: tie, Host: "beta", Paths: srv, Kind: "files"},
		Item{ID: "aaaaaaaaaaaa", Time: tie, Host: "beta", Paths: srv, Kind: "files"})

	seen := map[string]bool{}
	for _, it := range out {
		if seen[it.ID] {
			t.Fatalf("calendar: duplicate ID %s", it.ID)
		}
		seen[it.ID] = true
	}
	// Shuffle deterministically: Apply must not rely on the input order.
	for i := len(out) - 1; i > 0; i-- {
		j := rng.intn(i + 1)
		out[i], out[j] = out[j], out[i]
	}
	return slices.Clip(out)
}
