package retention

import (
	"slices"
	"strings"
	"time"
)

// Item is one snapshot as the policy sees it. Host, Paths and Kind are only
// used by GroupBy; Apply looks at ID, Time and Tags.
type Item struct {
	ID    string
	Time  time.Time
	Host  string
	Paths []string
	Tags  []string
	Kind  string
}

// hasTags reports whether it carries every tag in tags.
func (it Item) hasTags(tags []string) bool {
	for _, t := range tags {
		if !slices.Contains(it.Tags, t) {
			return false
		}
	}
	return true
}

// Decision is the verdict on one snapshot: for a kept snapshot, Reasons
// lists every rule that keeps it, in the order of the rules in Policy
// ("last snapshot", "hourly snapshot", "daily snapshot", "weekly snapshot",
// "monthly snapshot", "yearly snapshot", "within 30d", "daily within 1y",
// "tag nightly" or "tags a,b"); a removed snapshot has none.
type Decision struct {
	Item
	Reasons []string
}

// bucketer maps a snapshot's wall-clock time to its bucket number; pos is the
// snapshot's position newest first, which makes every snapshot its own
// bucket for "last".
type bucketer func(t time.Time, pos int) int

func byLast(_ time.Time, pos int) int { return pos }

func byHour(t time.Time, _ int) int {
	y, m, d := t.Date()
	return ((y*100+int(m))*100+d)*100 + t.Hour()
}

func byDay(t time.Time, _ int) int {
	y, m, d := t.Date()
	return (y*100+int(m))*100 + d
}

func byWeek(t time.Time, _ int) int {
	y, w := t.ISOWeek()
	return y*100 + w
}

func byMonth(t time.Time, _ int) int {
	y, m, _ := t.Date()
	return y*100 + int(m)
}

func byYear(t time.Time, _ int) int { return t.Year() }

// Apply decides which of items p keeps and returns the kept and the removed
// snapshots, each newest first. It is a pure function of its arguments:
//
//   - The items are sorted newest first; items with equal times are
//     ordered by ID, the smaller ID counting as the newer.
//   - Calendar buckets (hour, day, ISO 8601 week, month, year) are taken
//     from each time's wall clock in loc (nil means UTC).
//   - A count rule (Policy.Last to Policy.Yearly) walks the sorted items and
//     keeps an item whenever its bucket differs from the bucket of the item
//     the rule kept last, until the rule has kept N items; each kept item is
//     therefore the newest of its bucket, and the buckets are the N newest
//     that hold an item. Unlimited never stops.
//   - The within rules count back from a reference time: the time of the
//     newest item, or now if now is earlier (a snapshot dated in the future
//     does not move the window). So a host whose backups stopped keeps what
//     it had before it stopped. Policy.Within keeps every item strictly
//     newer than the reference minus the duration (Duration.Before in loc);
//     WithinHourly to WithinYearly keep the newest item of every bucket
//     strictly newer than that.
//   - Tags keeps every item carrying all tags of some group.
//
// Under an empty policy (Policy.Empty) every item is kept with the reason
// "no policy": Apply never removes everything by default. Apply does not
// validate p; a count below Unlimited acts as 0 (use Policy.Validate).
// Items and their Tags are not modified; the Decisions share their slices.
func Apply(items []Item, p Policy, now time.Time, loc *time.Location) (keep, remove []Decision) {
	if loc == nil {
		loc = time.UTC
	}
	sorted := slices.Clone(items)
	slices.SortStableFunc(sorted, func(a, b Item) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	if len(sorted) == 0 {
		return nil, nil
	}
	if p.Empty() {
		for _, it := range sorted {
			keep = append(keep, Decision{Item: it, Reasons: []string{"no policy"}})
		}
		return keep, nil
	}

	type countRule struct {
		left   int
		bucket bucketer
		last   int
		seen   bool
		reason string
	}
	counts := []countRule{
		{left: p.Last, bucket: byLast, reason: "last snapshot"},
		{left: p.Hourly, bucket: byHour, reason: "hourly snapshot"},
		{left: p.Daily, bucket: byDay, reason: "daily snapshot"},
		{left: p.Weekly, bucket: byWeek, reason: "weekly snapshot"},
		{left: p.Monthly, bucket: byMonth, reason: "monthly snapshot"},
		{left: p.Yearly, bucket: byYear, reason: "yearly snapshot"},
	}

	ref := sorted[0].Time
	if !now.IsZero() && now.Before(ref) {
		ref = now
	}
	type withinRule struct {
		after  time.Time
		bucket bucketer // nil keeps every item in the window
		last   int
		seen   bool
		reason string
	}
	var withins []withinRule
	for _, w := range []struct {
		d      Duration
		bucket bucketer
		name   string
	}{
		{p.Within, nil, "within"},
		{p.WithinHourly, byHour, "hourly within"},
		{p.WithinDaily, byDay, "daily within"},
		{p.WithinWeekly, byWeek, "weekly within"},
		{p.WithinMonthly, byMonth, "monthly within"},
		{p.WithinYearly, byYear, "yearly within"},
	} {
		if !w.d.IsZero() {
			withins = append(withins, withinRule{after: w.d.Before(ref, loc), bucket: w.bucket, reason: w.name + " " + w.d.String()})
		}
	}

	for pos, it := range sorted {
		wall := it.Time.In(loc)
		var reasons []string
		for i := range counts {
			c := &counts[i]
			if c.left == 0 || c.left < Unlimited {
				continue
			}
			if b := c.bucket(wall, pos); !c.seen || b != c.last {
				c.seen, c.last = true, b
				if c.left > 0 {
					c.left--
				}
				reasons = append(reasons, c.reason)
			}
		}
		for i := range withins {
			w := &withins[i]
			if !it.Time.After(w.after) {
				continue
			}
			if w.bucket == nil {
				reasons = append(reasons, w.reason)
				continue
			}
			if b := w.bucket(wall, pos); !w.seen || b != w.last {
				w.seen, w.last = true, b
				reasons = append(reasons, w.reason)
			}
		}
		for _, g := range p.Tags {
			if it.hasTags(g) {
				if len(g) == 1 {
					reasons = append(reasons, "tag "+g[0])
				} else {
					reasons = append(reasons, "tags "+strings.Join(g, ","))
				}
			}
		}
		if len(reasons) > 0 {
			keep = append(keep, Decision{Item: it, Reasons: reasons})
		} else {
			remove = append(remove, Decision{Item: it})
		}
	}
	return keep, remove
}
