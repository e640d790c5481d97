package retention

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenCase is one policy run over the calendar.
type goldenCase struct {
	name   string
	policy Policy
	zone   string // time zone of the calendar buckets
	group  string // ParseGrouping form
	until  string // RFC 3339; snapshots at or after it are left out ("" = all)
	now    string // RFC 3339; "" = until, or 2027-03-01T06:00:00Z
	// facts checks hand-computed expectations on the result, so that the
	// golden files are not merely whatever the code does.
	facts func(t *testing.T, r goldenResult)
}

// goldenResult is the outcome of one case: every decision by ID.
type goldenResult struct {
	loc   *time.Location
	all   []Item
	kept  map[string]Decision
	byKey map[string][]Item // items by group key string
}

const defaultNow = "2027-03-01T06:00:00Z"

func dur(s string) Duration {
	d, err := ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return d
}

var goldenCases = []goldenCase{
	{name: "last-5", policy: Policy{Last: 5}, zone: "Europe/Berlin", group: "host,paths"},
	{name: "hourly-24", policy: Policy{Hourly: 24}, zone: "Europe/Berlin", group: "host,paths"},
	{name: "hourly-berlin-fall-back", policy: Policy{Hourly: 8}, zone: "Europe/Berlin", group: "host", until: "2025-10-26T03:00:00Z", facts: factsFallBackBerlin},
	{name: "hourly-berlin-fall-back-in-utc", policy: Policy{Hourly: 8}, zone: "UTC", group: "host", until: "2025-10-26T03:00:00Z", facts: factsFallBackUTC},
	{name: "hourly-newyork-spring-forward", policy: Policy{Hourly: 6}, zone: "America/New_York", group: "host", until: "2026-03-08T12:00:00Z"},
	{name: "daily-7", policy: Policy{Daily: 7}, zone: "Europe/Berlin", group: "host,paths"},
	{name: "daily-7-newyork", policy: Policy{Daily: 7}, zone: "America/New_York", group: "host,paths"},
	{name: "daily-7-utc", policy: Policy{Daily: 7}, zone: "UTC", group: "host,paths"},
	{name: "daily-5-new-year-berlin", policy: Policy{Daily: 5}, zone: "Europe/Berlin", group: "host", until: "2026-01-01T12:00:00Z", facts: factsNewYear(true)},
	{name: "daily-5-new-year-utc", policy: Policy{Daily: 5}, zone: "UTC", group: "host", until: "2026-01-01T12:00:00Z", facts: factsNewYear(false)},
	{name: "daily-unlimited-gap", policy: Policy{Daily: Unlimited}, zone: "Europe/Berlin", group: "host,paths", until: "2025-09-01T00:00:00Z"},
	{name: "weekly-6-week-53-berlin", policy: Policy{Weekly: 6}, zone: "Europe/Berlin", group: "host,paths", until: "2027-01-10T00:00:00Z", facts: factsWeek53("Europe/Berlin")},
	{name: "weekly-6-week-53-newyork", policy: Policy{Weekly: 6}, zone: "America/New_York", group: "host,paths", until: "2027-01-10T00:00:00Z", facts: factsWeek53("America/New_York")},
	{name: "weekly-unlimited", policy: Policy{Weekly: Unlimited}, zone: "Europe/Berlin", group: "host,paths", facts: factsOnePerBucket(byWeek)},
	{name: "monthly-12", policy: Policy{Monthly: 12}, zone: "Europe/Berlin", group: "host,paths"},
	{name: "monthly-unlimited", policy: Policy{Monthly: Unlimited}, zone: "America/New_York", group: "host,paths", facts: factsOnePerBucket(byMonth)},
	{name: "yearly-3", policy: Policy{Yearly: 3}, zone: "Europe/Berlin", group: "host,paths"},
	{name: "yearly-unlimited-utc", policy: Policy{Yearly: Unlimited}, zone: "UTC", group: "host,paths"},
	{name: "within-30d", policy: Policy{Within: dur("30d")}, zone: "Europe/Berlin", group: "host,paths", facts: factsWithin30d},
	{name: "within-2m3d4h", policy: Policy{Within: dur("2m3d4h")}, zone: "Europe/Berlin", group: "host,paths", until: "2026-06-01T00:00:00Z"},
	{name: "within-hourly-1d", policy: Policy{WithinHourly: dur("1d")}, zone: "Europe/Berlin", group: "host,paths", until: "2025-10-26T12:00:00Z"},
	{name: "within-daily-14d", policy: Policy{WithinDaily: dur("14d")}, zone: "America/New_York", group: "host,paths"},
	{name: "within-weekly-3m", policy: Policy{WithinWeekly: dur("3m")}, zone: "Europe/Berlin", group: "host,paths", until: "2027-01-10T00:00:00Z"},
	{name: "within-monthly-1y", policy: Policy{WithinMonthly: dur("1y")}, zone: "Europe/Berlin", group: "host,paths"},
	{name: "within-yearly-2y", policy: Policy{WithinYearly: dur("2y")}, zone: "UTC", group: "host,paths"},
	{name: "within-future-now", policy: Policy{Within: dur("10d")}, zone: "UTC", group: "host", until: "2026-06-20T00:00:00Z", now: "2026-06-15T00:00:00Z"},
	{name: "tags-db-or-pre-upgrade", policy: Policy{Tags: [][]string{{"db"}, {"pre-upgrade"}}}, zone: "UTC", group: "host,paths"},
	{name: "restic-typical", policy: Policy{Last: 3, Daily: 7, Weekly: 5, Monthly: 12, Yearly: Unlimited}, zone: "Europe/Berlin", group: "host,paths"},
	{name: "within-ladder-and-tags", policy: Policy{Within: dur("2d"), WithinDaily: dur("10d"), WithinWeekly: dur("2m"), WithinMonthly: dur("1y"),
		WithinYearly: dur("5y"), Tags: [][]string{{"pre-upgrade"}}}, zone: "Europe/Berlin", group: "host,paths"},
	{name: "counts-and-within", policy: Policy{Last: 2, Hourly: 3, Daily: 4, Within: dur("3d"), WithinWeekly: dur("1m")}, zone: "America/New_York", group: "host,paths"},
	{name: "one-group", policy: Policy{Daily: 10, Monthly: 3}, zone: "Europe/Berlin", group: ""},
	{name: "group-host", policy: Policy{Daily: 5, Weekly: 3}, zone: "Europe/Berlin", group: "host"},
	{name: "group-tags-kind", policy: Policy{Last: 2, Monthly: 2}, zone: "UTC", group: "tags,kind"},
}

func (c goldenCase) run(t *testing.T, all []Item) (goldenResult, string) {
	t.Helper()
	loc := mustZone(t, c.zone)
	by, err := ParseGrouping(c.group)
	if err != nil {
		t.Fatal(err)
	}
	now, until := at(t, defaultNow), calendarEnd
	if c.until != "" {
		until = at(t, c.until)
		now = until
	}
	if c.now != "" {
		now = at(t, c.now)
	}
	var in []Item
	for _, it := range all {
		if it.Time.Before(until) {
			in = append(in, it)
		}
	}
	res := goldenResult{loc: loc, all: in, kept: map[string]Decision{}, byKey: map[string][]Item{}}
	var b bytes.Buffer
	groups := GroupBy(in, by)
	nKeep := 0
	var body bytes.Buffer
	for _, g := range groups {
		keep, remove := Apply(g.Items, c.policy, now, loc)
		checkOracle(t, g.Key.String(), g.Items, c.policy, now, loc, keep, remove)
		nKeep += len(keep)
		res.byKey[g.Key.String()] = g.Items
		fmt.Fprintf(&body, "\n%s: %d snapshots, %d kept\n", g.Key, len(g.Items), len(keep))
		for _, d := range keep {
			res.kept[d.ID] = d
			fmt.Fprintf(&body, "  %s  %s\n", describe(d.Item, loc), strings.Join(d.Reasons, ", "))
		}
	}
	fmt.Fprintf(&b, "# retention.Apply over the synthetic calendar of calendar_test.go.\n")
	fmt.Fprintf(&b, "# Regenerate: go test ./snapshot/retention -run TestGolden -update\n")
	fmt.Fprintf(&b, "# policy: %s\n", c.policy)
	fmt.Fprintf(&b, "# zone: %s; now: %s; group by: %q; snapshots before %s\n", c.zone, now.UTC().Format(time.RFC3339), c.group, until.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "# %d snapshots: %d kept, %d removed; kept snapshots are listed per group, newest first\n", len(in), nKeep, len(in)-nKeep)
	b.Write(body.Bytes())
	return res, b.String()
}

// describe prints an item for the golden files: local wall clock, offset
// name, UTC time, ISO week, ID and tags.
func describe(it Item, loc *time.Location) string {
	w := it.Time.In(loc)
	y, wk := w.ISOWeek()
	s := fmt.Sprintf("%s (%sZ) %d-W%02d %s", w.Format("Mon 2006-01-02 15:04:05 MST"), it.Time.UTC().Format("01-02 15:04"), y, wk, it.ID)
	if len(it.Tags) > 0 {
		s += " [" + strings.Join(it.Tags, ",") + "]"
	}
	return s
}

func TestGolden(t *testing.T) {
	all := calendar(t)
	names := map[string]bool{}
	for _, c := range goldenCases {
		names[c.name+".golden"] = true
		t.Run(c.name, func(t *testing.T) {
			res, got := c.run(t, all)
			path := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("output differs from %s (run with -update after checking the change):\n%s", path, firstDiff(string(want), got))
			}
			if c.facts != nil {
				c.facts(t, res)
			}
		})
	}
	// Every golden file belongs to a case, so none goes stale unnoticed.
	files, _ := filepath.Glob(filepath.Join("testdata", "*.golden"))
	for _, f := range files {
		if !names[filepath.Base(f)] {
			t.Errorf("%s belongs to no case", f)
		}
	}
}

// firstDiff shows the first differing line of two texts.
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\nwant: %s\n got: %s", i+1, wl, gl)
		}
	}
	return "(no line differs)"
}

// checkOracle recomputes the decisions with a second, independent
// formulation of the documented semantics (buckets named by formatted
// dates; "newest of each bucket, newest N buckets") and compares.
func checkOracle(t *testing.T, group string, in []Item, p Policy, now time.Time, loc *time.Location, keep, remove []Decision) {
	t.Helper()
	if len(keep)+len(remove) != len(in) {
		t.Fatalf("%s: %d kept + %d removed != %d snapshots", group, len(keep), len(remove), len(in))
	}
	sorted := slices.Clone(in)
	slices.SortFunc(sorted, func(a, b Item) int {
		switch {
		case a.Time.After(b.Time):
			return -1
		case b.Time.After(a.Time):
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	want := map[string][]string{}
	labels := map[string]func(Item) string{
		"last":    func(it Item) string { return it.ID },
		"hourly":  func(it Item) string { return it.Time.In(loc).Format("2006-01-02 15") },
		"daily":   func(it Item) string { return it.Time.In(loc).Format("2006-01-02") },
		"weekly":  func(it Item) string { y, w := it.Time.In(loc).ISOWeek(); return fmt.Sprintf("%d-W%d", y, w) },
		"monthly": func(it Item) string { return it.Time.In(loc).Format("2006-01") },
		"yearly":  func(it Item) string { return it.Time.In(loc).Format("2006") },
	}
	// newestPerBucket returns the newest item of each bucket, newest first.
	newestPerBucket := func(items []Item, label func(Item) string) []Item {
		seen := map[string]bool{}
		var out []Item
		for _, it := range items {
			if l := label(it); !seen[l] {
				seen[l] = true
				out = append(out, it)
			}
		}
		return out
	}
	for _, c := range p.counts() {
		if c.n == 0 {
			continue
		}
		picked := newestPerBucket(sorted, labels[c.name])
		if c.n > 0 && len(picked) > c.n {
			picked = picked[:c.n]
		}
		for _, it := range picked {
			want[it.ID] = append(want[it.ID], c.name+" snapshot")
		}
	}
	if len(sorted) > 0 {
		ref := sorted[0].Time
		if now.Before(ref) {
			ref = now
		}
		for _, w := range p.withins() {
			if w.d.IsZero() {
				continue
			}
			cut := w.d.Before(ref, loc)
			var window []Item
			for _, it := range sorted {
				if it.Time.After(cut) {
					window = append(window, it)
				}
			}
			if w.name != "within" {
				window = newestPerBucket(window, labels[strings.TrimSuffix(w.name, " within")])
			}
			for _, it := range window {
				want[it.ID] = append(want[it.ID], w.name+" "+w.d.String())
			}
		}
	}
	for _, g := range p.Tags {
		for _, it := range sorted {
			if it.hasTags(g) {
				want[it.ID] = append(want[it.ID], "tag"+map[bool]string{true: "s", false: ""}[len(g) > 1]+" "+strings.Join(g, ","))
			}
		}
	}
	got := map[string][]string{}
	for _, d := range keep {
		got[d.ID] = slices.Sorted(slices.Values(d.Reasons))
	}
	for id := range want {
		slices.Sort(want[id])
	}
	for id, r := range want {
		if !slices.Equal(got[id], r) {
			t.Errorf("%s: snapshot %s: reasons %q, oracle says %q", group, id, got[id], r)
		}
	}
	for id, r := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("%s: snapshot %s kept for %q, oracle removes it", group, id, r)
		}
	}
}
