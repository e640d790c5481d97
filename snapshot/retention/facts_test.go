package retention

import (
	"slices"
	"testing"
)

// Hand-computed expectations on golden cases. Each was worked out from the
// calendar's definition (calendar_test.go) and the documented semantics,
// then confirmed against the golden file; they make sure a golden file
// regenerated with -update still says what the documentation says.

// keptAt reports whether the snapshot of host at the instant utc (RFC 3339)
// is kept, failing the test if there is no such snapshot.
func keptAt(t *testing.T, r goldenResult, host, utc string) bool {
	t.Helper()
	when := at(t, utc)
	for _, it := range r.all {
		if it.Host == host && it.Time.Equal(when) {
			_, ok := r.kept[it.ID]
			return ok
		}
	}
	t.Fatalf("no snapshot of %s at %s", host, utc)
	return false
}

func wantKept(t *testing.T, r goldenResult, host string, kept bool, utcs ...string) {
	t.Helper()
	for _, u := range utcs {
		if got := keptAt(t, r, host, u); got != kept {
			t.Errorf("snapshot of %s at %s: kept = %v, want %v", host, u, got, kept)
		}
	}
}

// factsFallBackBerlin: on 26 October 2025 the Berlin wall clock shows 02:xx
// from 00:00Z to 02:00Z (CEST, then CET). alpha has /home snapshots at
// 00:15Z, 00:45Z, 01:15Z, 01:29:22Z (the nightly) and 01:45Z in that hour,
// so only 01:45Z (02:45 CET) is its hourly snapshot.
func factsFallBackBerlin(t *testing.T, r goldenResult) {
	wantKept(t, r, "alpha", true, "2025-10-26T01:45:00Z", "2025-10-26T02:05:05Z")
	wantKept(t, r, "alpha", false, "2025-10-26T00:15:00Z", "2025-10-26T00:45:00Z", "2025-10-26T01:15:00Z", "2025-10-26T01:29:22Z")
}

// factsFallBackUTC: the same snapshots in UTC fall into hours 00 and 01.
func factsFallBackUTC(t *testing.T, r goldenResult) {
	wantKept(t, r, "alpha", true, "2025-10-26T00:45:00Z", "2025-10-26T01:45:00Z", "2025-10-26T02:05:05Z")
	wantKept(t, r, "alpha", false, "2025-10-26T00:15:00Z", "2025-10-26T01:15:00Z", "2025-10-26T01:29:22Z")
}

// factsNewYear: 2025-12-31T22:59:59Z is 23:59:59 on 31 December in Berlin
// and the newest Berlin snapshot of that day; 23:00:01Z is already
// 1 January there, where the nightly at 01:33Z is newer. In UTC both are
// 31 December, and the later one wins.
func factsNewYear(berlin bool) func(*testing.T, goldenResult) {
	return func(t *testing.T, r goldenResult) {
		wantKept(t, r, "alpha", true, "2026-01-01T01:33:45Z")
		wantKept(t, r, "alpha", berlin, "2025-12-31T22:59:59Z")
		wantKept(t, r, "alpha", !berlin, "2025-12-31T23:00:01Z")
	}
}

// factsWeek53: ISO week 53 of 2026 runs from Monday 28 December to Sunday
// 3 January. beta's snapshot at 2027-01-03T23:30Z is Sunday 18:30 in New
// York (week 53, and the newest there) but Monday 00:30 in Berlin (week 1
// of 2027, where 2027-01-07T14:43:22Z is newer); in Berlin beta's week 53
// is therefore kept by its snapshot of 30 December 11:52:47Z. The Monday
// 00:30 EST snapshot (05:30Z on 4 January) is week 1 in both zones.
func factsWeek53(zone string) func(*testing.T, goldenResult) {
	return func(t *testing.T, r goldenResult) {
		ny := zone == "America/New_York"
		wantKept(t, r, "beta", ny, "2027-01-03T23:30:00Z")
		wantKept(t, r, "beta", !ny, "2026-12-30T11:52:47Z")
		wantKept(t, r, "beta", false, "2027-01-04T05:30:00Z", "2026-12-28T15:00:00Z")
		wantKept(t, r, "beta", true, "2027-01-07T14:43:22Z")
		// Every group with snapshots in that week keeps exactly one
		// labelled 2026-W53.
		for key, items := range r.byKey {
			has, kept := false, 0
			for _, it := range items {
				y, w := it.Time.In(r.loc).ISOWeek()
				if y == 2026 && w == 53 {
					has = true
					if _, ok := r.kept[it.ID]; ok {
						kept++
					}
				}
			}
			if has && kept != 1 {
				t.Errorf("%s: %d snapshots of 2026-W53 kept, want 1", key, kept)
			}
		}
	}
}

// factsOnePerBucket: with an unlimited count every bucket that holds a
// snapshot keeps exactly one, and it is the newest of the bucket.
func factsOnePerBucket(bucket bucketer) func(*testing.T, goldenResult) {
	return func(t *testing.T, r goldenResult) {
		for key, items := range r.byKey {
			newest := map[int]Item{}
			for _, it := range items {
				b := bucket(it.Time.In(r.loc), 0)
				if n, ok := newest[b]; !ok || it.Time.After(n.Time) {
					newest[b] = it
				}
			}
			kept := 0
			for _, it := range items {
				if _, ok := r.kept[it.ID]; ok {
					kept++
					if n := newest[bucket(it.Time.In(r.loc), 0)]; n.ID != it.ID {
						t.Errorf("%s: kept %s, but %s is newer in the same bucket", key, it.ID, n.ID)
					}
				}
			}
			if kept != len(newest) {
				t.Errorf("%s: kept %d, want one per bucket: %d", key, kept, len(newest))
			}
		}
	}
}

// factsWithin30d: alpha /etc's newest snapshot is Sunday 28 February 2027
// 04:06:52 CET; thirty days earlier is 29 January, so the five Sundays
// from 31 January on are kept and nothing else. Every group keeps its
// newest snapshot, and the window of gamma (an image every 20 to 40 days)
// is counted from gamma's own newest snapshot, not from now.
func factsWithin30d(t *testing.T, r goldenResult) {
	var etc []string
	for _, it := range r.byKey[`host "alpha", paths [/etc]`] {
		if _, ok := r.kept[it.ID]; ok {
			etc = append(etc, it.Time.In(r.loc).Format("Mon 2006-01-02"))
		}
	}
	slices.Sort(etc)
	want := []string{"Sun 2027-01-31", "Sun 2027-02-07", "Sun 2027-02-14", "Sun 2027-02-21", "Sun 2027-02-28"}
	if !slices.Equal(etc, want) {
		t.Errorf("alpha /etc kept %q, want %q", etc, want)
	}
	for key, items := range r.byKey {
		newest := slices.MaxFunc(items, func(a, b Item) int { return a.Time.Compare(b.Time) })
		if _, ok := r.kept[newest.ID]; !ok {
			t.Errorf("%s: newest snapshot %s removed", key, newest.ID)
		}
	}
	// gamma's newest image is of 3 February 2027; the one of 6 January is 53
	// days before now but 28 days before that, so it is kept.
	wantKept(t, r, "gamma", true, "2027-02-03T14:10:01Z", "2027-01-06T22:35:16Z")
	if n := len(r.byKey[`host "gamma", paths [/dev/sda]`]); n != 25 {
		t.Errorf("gamma has %d snapshots, want 25", n)
	}
}
