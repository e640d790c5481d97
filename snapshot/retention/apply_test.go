package retention

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// at parses an RFC 3339 time or fails the test.
func at(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// items builds items named by their IDs from "id=time[:tag+tag]" specs.
func items(t testing.TB, specs ...string) []Item {
	t.Helper()
	var out []Item
	for _, s := range specs {
		id, rest, _ := strings.Cut(s, "=")
		ts, tags, _ := strings.Cut(rest, "|")
		it := Item{ID: id, Time: at(t, ts)}
		if tags != "" {
			it.Tags = strings.Split(tags, "+")
		}
		out = append(out, it)
	}
	return out
}

func ids(ds []Decision) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.ID)
	}
	return out
}

// check applies p and compares kept and removed IDs (newest first).
func check(t *testing.T, in []Item, p Policy, now time.Time, loc *time.Location, wantKeep, wantRemove []string) []Decision {
	t.Helper()
	keep, remove := Apply(in, p, now, loc)
	if !slices.Equal(ids(keep), wantKeep) {
		t.Errorf("kept %v, want %v", ids(keep), wantKeep)
	}
	if !slices.Equal(ids(remove), wantRemove) {
		t.Errorf("removed %v, want %v", ids(remove), wantRemove)
	}
	return keep
}

func reasonsOf(keep []Decision, id string) []string {
	for _, d := range keep {
		if d.ID == id {
			return d.Reasons
		}
	}
	return nil
}

func TestApplyHandComputed(t *testing.T) {
	berlin := mustZone(t, "Europe/Berlin")
	ny := mustZone(t, "America/New_York")
	now := at(t, "2030-01-01T00:00:00Z")

	t.Run("daily keeps the newest of each of the newest days", func(t *testing.T) {
		// Monday 2 March 2026 has two snapshots; 4 March has none.
		in := items(t, "a=2026-03-02T10:00:00Z", "b=2026-03-02T20:00:00Z", "c=2026-03-03T09:00:00Z", "d=2026-03-05T12:00:00Z")
		check(t, in, Policy{Daily: 3}, now, time.UTC, []string{"d", "c", "b"}, []string{"a"})
		check(t, in, Policy{Daily: 2}, now, time.UTC, []string{"d", "c"}, []string{"b", "a"})
		check(t, in, Policy{Daily: Unlimited}, now, time.UTC, []string{"d", "c", "b"}, []string{"a"})
	})

	t.Run("days are the days of the given time zone", func(t *testing.T) {
		// 21:30Z is 23:30 on 1 June in Berlin; 22:30Z is already 2 June.
		in := items(t, "a=2026-06-01T21:30:00Z", "b=2026-06-01T22:30:00Z", "c=2026-06-02T10:00:00Z")
		check(t, in, Policy{Daily: 5}, now, time.UTC, []string{"c", "b"}, []string{"a"})
		check(t, in, Policy{Daily: 5}, now, berlin, []string{"c", "a"}, []string{"b"})
	})

	t.Run("the repeated hour at the end of summer time is one bucket", func(t *testing.T) {
		// On 26 October 2025 Berlin's clocks go from 03:00 CEST back to
		// 02:00 CET: a and b are both 02:30 local, c is 03:30 CET.
		in := items(t, "a=2025-10-26T00:30:00Z", "b=2025-10-26T01:30:00Z", "c=2025-10-26T02:30:00Z")
		check(t, in, Policy{Hourly: Unlimited}, now, berlin, []string{"c", "b"}, []string{"a"})
		check(t, in, Policy{Hourly: Unlimited}, now, time.UTC, []string{"c", "b", "a"}, nil)
		// In New York (01:00 EST/EDT repeated a week later) all three are
		// distinct hours: 20:30, 21:30, 22:30 EDT on 25 October.
		check(t, in, Policy{Hourly: 2}, now, ny, []string{"c", "b"}, []string{"a"})
	})

	t.Run("ISO weeks cross the year boundary and 2026 has week 53", func(t *testing.T) {
		in := items(t,
			"w52=2025-12-28T12:00:00Z",   // Sunday, 2025-W52
			"w01a=2025-12-29T12:00:00Z",  // Monday, 2026-W01
			"w01b=2026-01-02T12:00:00Z",  // Friday, 2026-W01
			"w53a=2026-12-28T12:00:00Z",  // Monday, 2026-W53
			"w53b=2027-01-03T12:00:00Z",  // Sunday, 2026-W53
			"w27-1=2027-01-04T12:00:00Z", // Monday, 2027-W01
		)
		check(t, in, Policy{Weekly: Unlimited}, now, time.UTC,
			[]string{"w27-1", "w53b", "w01b", "w52"}, []string{"w53a", "w01a"})
		// Years are calendar years, not ISO years.
		check(t, in, Policy{Yearly: Unlimited}, now, time.UTC,
			[]string{"w27-1", "w53a", "w01a"}, []string{"w53b", "w01b", "w52"})
		check(t, in, Policy{Weekly: 2}, now, time.UTC, []string{"w27-1", "w53b"}, []string{"w53a", "w01b", "w01a", "w52"})
	})

	t.Run("months without snapshots do not use up the count", func(t *testing.T) {
		in := items(t, "jan5=2026-01-05T00:00:00Z", "jan20=2026-01-20T00:00:00Z", "apr1=2026-04-01T00:00:00Z",
			"apr2=2026-04-02T00:00:00Z", "jul9=2026-07-09T00:00:00Z")
		check(t, in, Policy{Monthly: 2}, now, time.UTC, []string{"jul9", "apr2"}, []string{"apr1", "jan20", "jan5"})
		check(t, in, Policy{Monthly: 3}, now, time.UTC, []string{"jul9", "apr2", "jan20"}, []string{"apr1", "jan5"})
	})

	t.Run("last breaks ties by ID", func(t *testing.T) {
		in := items(t, "x=2026-01-01T10:00:00Z", "b=2026-01-01T12:00:00Z", "a=2026-01-01T12:00:00Z")
		check(t, in, Policy{Last: 1}, now, time.UTC, []string{"a"}, []string{"b", "x"})
		check(t, in, Policy{Last: 2}, now, time.UTC, []string{"a", "b"}, []string{"x"})
		check(t, in, Policy{Last: Unlimited}, now, time.UTC, []string{"a", "b", "x"}, nil)
	})

	t.Run("within counts back from the newest snapshot, exclusive", func(t *testing.T) {
		in := items(t, "old=2026-06-03T12:00:00Z", "edge=2026-06-03T12:00:01Z", "new=2026-06-10T12:00:00Z")
		// now is three weeks later: the window still ends at the newest snapshot.
		keep := check(t, in, Policy{Within: Duration{Days: 7}}, at(t, "2026-07-01T00:00:00Z"), time.UTC,
			[]string{"new", "edge"}, []string{"old"})
		if r := reasonsOf(keep, "edge"); !slices.Equal(r, []string{"within 7d"}) {
			t.Errorf("reasons %q", r)
		}
	})

	t.Run("within counts back from now when a snapshot is in the future", func(t *testing.T) {
		in := items(t, "future=2099-01-01T00:00:00Z", "recent=2026-06-09T00:00:00Z", "old=2026-05-01T00:00:00Z")
		check(t, in, Policy{Within: Duration{Days: 7}}, at(t, "2026-06-10T12:00:00Z"), time.UTC,
			[]string{"future", "recent"}, []string{"old"})
	})

	t.Run("within a month of 31 March reaches back to 28 February", func(t *testing.T) {
		in := items(t, "feb28=2026-02-28T12:00:00Z", "feb28late=2026-02-28T12:01:00Z", "mar2=2026-03-02T00:00:00Z", "mar31=2026-03-31T12:00:00Z")
		check(t, in, Policy{Within: Duration{Months: 1}}, now, time.UTC,
			[]string{"mar31", "mar2", "feb28late"}, []string{"feb28"})
	})

	t.Run("daily within keeps the newest of each day in the window", func(t *testing.T) {
		in := items(t, "10b=2026-06-10T18:00:00Z", "10a=2026-06-10T08:00:00Z", "09b=2026-06-09T20:00:00Z",
			"09a=2026-06-09T07:00:00Z", "08=2026-06-08T12:00:00Z", "07b=2026-06-07T19:00:00Z",
			"07a=2026-06-07T17:00:00Z", "06=2026-06-06T12:00:00Z")
		keep := check(t, in, Policy{WithinDaily: Duration{Days: 3}}, now, time.UTC,
			[]string{"10b", "09b", "08", "07b"}, []string{"10a", "09a", "07a", "06"})
		if r := reasonsOf(keep, "07b"); !slices.Equal(r, []string{"daily within 3d"}) {
			t.Errorf("reasons %q", r)
		}
	})

	t.Run("weekly and monthly within", func(t *testing.T) {
		in := items(t, "a=2026-06-10T00:00:00Z", "b=2026-06-08T00:00:00Z", "c=2026-06-07T00:00:00Z",
			"d=2026-05-31T00:00:00Z", "e=2026-05-20T00:00:00Z", "f=2026-04-01T00:00:00Z")
		// 1m back from 10 June is 10 May: a..e are in the window.
		check(t, in, Policy{WithinWeekly: Duration{Months: 1}}, now, time.UTC, []string{"a", "c", "d", "e"}, []string{"b", "f"})
		check(t, in, Policy{WithinMonthly: Duration{Months: 1}}, now, time.UTC, []string{"a", "d"}, []string{"b", "c", "e", "f"})
		check(t, in, Policy{WithinYearly: Duration{Years: 1}}, now, time.UTC, []string{"a"}, []string{"b", "c", "d", "e", "f"})
		check(t, in, Policy{WithinHourly: Duration{Days: 3}}, now, time.UTC, []string{"a", "b"}, []string{"c", "d", "e", "f"})
	})

	t.Run("tags keep snapshots with every tag of a group", func(t *testing.T) {
		in := items(t, "n=2026-01-04T00:00:00Z|nightly", "nd=2026-01-03T00:00:00Z|nightly+db",
			"m=2026-01-02T00:00:00Z|manual", "none=2026-01-01T00:00:00Z")
		keep := check(t, in, Policy{Tags: [][]string{{"db", "nightly"}}}, now, time.UTC, []string{"nd"}, []string{"n", "m", "none"})
		if r := reasonsOf(keep, "nd"); !slices.Equal(r, []string{"tags db,nightly"}) {
			t.Errorf("reasons %q", r)
		}
		keep = check(t, in, Policy{Tags: [][]string{{"manual"}, {"db"}}}, now, time.UTC, []string{"nd", "m"}, []string{"n", "none"})
		if r := reasonsOf(keep, "m"); !slices.Equal(r, []string{"tag manual"}) {
			t.Errorf("reasons %q", r)
		}
	})

	t.Run("reasons list every rule in policy order", func(t *testing.T) {
		in := items(t, "a=2026-01-01T00:00:00Z|x", "b=2026-01-05T00:00:00Z|x")
		p := Policy{Last: 1, Daily: 1, Weekly: 2, Within: Duration{Days: 1}, WithinDaily: Duration{Days: 1}, Tags: [][]string{{"x"}}}
		keep := check(t, in, p, now, time.UTC, []string{"b", "a"}, nil)
		want := []string{"last snapshot", "daily snapshot", "weekly snapshot", "within 1d", "daily within 1d", "tag x"}
		if r := reasonsOf(keep, "b"); !slices.Equal(r, want) {
			t.Errorf("reasons of b %q, want %q", r, want)
		}
		if r := reasonsOf(keep, "a"); !slices.Equal(r, []string{"weekly snapshot", "tag x"}) {
			t.Errorf("reasons of a %q", r)
		}
	})

	t.Run("rules combine by union", func(t *testing.T) {
		in := items(t, "a=2026-01-01T00:00:00Z", "b=2026-01-02T00:00:00Z", "c=2026-02-01T00:00:00Z", "d=2026-02-02T00:00:00Z")
		check(t, in, Policy{Last: 1, Monthly: 2}, now, time.UTC, []string{"d", "b"}, []string{"c", "a"})
	})

	t.Run("an empty policy keeps everything", func(t *testing.T) {
		in := items(t, "a=2026-01-01T00:00:00Z", "b=2026-01-02T00:00:00Z")
		keep := check(t, in, Policy{}, now, time.UTC, []string{"b", "a"}, nil)
		if r := reasonsOf(keep, "a"); !slices.Equal(r, []string{"no policy"}) {
			t.Errorf("reasons %q", r)
		}
	})

	t.Run("no snapshots", func(t *testing.T) {
		check(t, nil, Policy{Daily: 3}, now, time.UTC, nil, nil)
	})

	t.Run("input is not modified", func(t *testing.T) {
		in := items(t, "a=2026-01-01T00:00:00Z", "b=2026-01-02T00:00:00Z")
		Apply(in, Policy{Last: 1}, now, nil)
		if in[0].ID != "a" || in[1].ID != "b" {
			t.Errorf("input reordered: %v", in)
		}
	})
}

func TestApplyIgnoresTimeRepresentation(t *testing.T) {
	// The same instants stored with different locations give the same
	// decisions: only loc defines the calendar.
	tokyo := mustZone(t, "Asia/Tokyo")
	berlin := mustZone(t, "Europe/Berlin")
	in := calendar(t)
	moved := slices.Clone(in)
	for i := range moved {
		moved[i].Time = moved[i].Time.In(tokyo)
	}
	p := Policy{Hourly: 30, Daily: 20, Weekly: 10, Monthly: 10, Yearly: 3, WithinDaily: Duration{Months: 2}}
	now := at(t, "2027-03-01T00:00:00Z")
	k1, r1 := Apply(in, p, now, berlin)
	k2, r2 := Apply(moved, p, now, berlin)
	if !slices.Equal(ids(k1), ids(k2)) || !slices.Equal(ids(r1), ids(r2)) {
		t.Error("decisions depend on the location stored in the snapshot times")
	}
}

func TestPolicyValidateAndString(t *testing.T) {
	bad := []Policy{
		{Daily: -2},
		{Within: Duration{Days: -1}},
		{Tags: [][]string{{}}},
		{Tags: [][]string{{"a", ""}}},
	}
	for _, p := range bad {
		if err := p.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", p)
		}
	}
	good := Policy{Last: Unlimited, Daily: 7, WithinDaily: Duration{Years: 1}, Tags: [][]string{{"a", "b"}}}
	if err := good.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if got, want := good.String(), "keep all last, 7 daily, daily within 1y, tags [a,b]"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if !(Policy{}).Empty() || (Policy{Tags: [][]string{{"a"}}}).Empty() || (Policy{WithinYearly: Duration{Hours: 1}}).Empty() {
		t.Error("Empty is wrong")
	}
	if got := (Policy{}).String(); got != "keep all (no policy)" {
		t.Errorf("empty String() = %q", got)
	}
}

func TestGroupBy(t *testing.T) {
	in := []Item{
		{ID: "1", Host: "b", Paths: []string{"/x"}, Kind: "files"},
		{ID: "2", Host: "a", Paths: []string{"/y", "/x"}, Tags: []string{"t"}, Kind: "files"},
		{ID: "3", Host: "a", Paths: []string{"/x", "/y"}, Kind: "image"},
		{ID: "4", Host: "a", Paths: []string{"/x"}, Tags: []string{"t"}, Kind: "files"},
	}
	cases := []struct {
		by   string
		want [][]string
		keys []string
	}{
		{"host,paths", [][]string{{"4"}, {"2", "3"}, {"1"}}, []string{`host "a", paths [/x]`, `host "a", paths [/x /y]`, `host "b", paths [/x]`}},
		{"", [][]string{{"1", "2", "3", "4"}}, []string{"all snapshots"}},
		{"host", [][]string{{"2", "3", "4"}, {"1"}}, nil},
		{"tags", [][]string{{"1", "3"}, {"2", "4"}}, []string{"tags []", "tags [t]"}},
		{"kind", [][]string{{"1", "2", "4"}, {"3"}}, []string{"kind files", "kind image"}},
		{"kind,tags", [][]string{{"1"}, {"3"}, {"2", "4"}}, []string{"tags [], kind files", "tags [], kind image", "tags [t], kind files"}},
	}
	for _, c := range cases {
		g, err := ParseGrouping(c.by)
		if err != nil {
			t.Fatal(err)
		}
		if g.String() != c.by && c.by != "kind,tags" {
			t.Errorf("ParseGrouping(%q).String() = %q", c.by, g.String())
		}
		groups := GroupBy(in, g)
		var got [][]string
		var keys []string
		for _, gr := range groups {
			var s []string
			for _, it := range gr.Items {
				s = append(s, it.ID)
			}
			got = append(got, s)
			keys = append(keys, gr.Key.String())
		}
		if !slices.EqualFunc(got, c.want, slices.Equal) {
			t.Errorf("GroupBy(%q) = %v, want %v", c.by, got, c.want)
		}
		if c.keys != nil && !slices.Equal(keys, c.keys) {
			t.Errorf("GroupBy(%q) keys %q, want %q", c.by, keys, c.keys)
		}
	}
	if _, err := ParseGrouping("host,users"); err == nil {
		t.Error("ParseGrouping accepted an unknown field")
	}
}
