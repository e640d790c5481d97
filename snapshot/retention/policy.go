package retention

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Unlimited as a count keeps the newest snapshot of every bucket.
const Unlimited = -1

// Policy says which snapshots to keep. A snapshot is kept when any rule
// keeps it; the rest are removed. The zero Policy is empty (see Empty).
type Policy struct {
	// Last, Hourly, Daily, Weekly, Monthly and Yearly keep the newest
	// snapshot of each of the N newest hours, days, ISO weeks, months and
	// years that hold a snapshot (Last: the N newest snapshots). 0 turns a
	// rule off; Unlimited (-1) applies it to every bucket.
	Last, Hourly, Daily, Weekly, Monthly, Yearly int
	// Within keeps every snapshot newer than the reference time minus
	// Within (see Apply for the reference time).
	Within Duration
	// WithinHourly, WithinDaily, WithinWeekly, WithinMonthly and
	// WithinYearly keep the newest snapshot of every hour, day, ISO week,
	// month and year newer than the reference time minus the duration.
	WithinHourly, WithinDaily, WithinWeekly, WithinMonthly, WithinYearly Duration
	// Tags keeps the snapshots that carry every tag of at least one group.
	Tags [][]string
}

// Empty reports whether p has no rule at all. Apply keeps every snapshot
// under an empty policy; removing everything must be asked for separately.
func (p Policy) Empty() bool {
	return p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0 && p.Yearly == 0 &&
		p.Within.IsZero() && p.WithinHourly.IsZero() && p.WithinDaily.IsZero() && p.WithinWeekly.IsZero() &&
		p.WithinMonthly.IsZero() && p.WithinYearly.IsZero() && len(p.Tags) == 0
}

// Validate reports a count below Unlimited, a duration component outside
// 0..1,000,000, or an empty tag group (which would keep every snapshot).
func (p Policy) Validate() error {
	var errs []error
	for _, c := range p.counts() {
		if c.n < Unlimited {
			errs = append(errs, fmt.Errorf("retention: %s count %d: want -1 (unlimited), 0 (off) or more", c.name, c.n))
		}
	}
	for _, w := range p.withins() {
		if !w.d.valid() {
			errs = append(errs, fmt.Errorf("retention: %s duration %+v out of range", w.name, w.d))
		}
	}
	for i, g := range p.Tags {
		n := 0
		for _, t := range g {
			if t != "" {
				n++
			}
		}
		if n == 0 || n != len(g) {
			errs = append(errs, fmt.Errorf("retention: tag group %d is empty or holds an empty tag", i+1))
		}
	}
	return errors.Join(errs...)
}

type namedCount struct {
	name string
	n    int
}

func (p Policy) counts() []namedCount {
	return []namedCount{{"last", p.Last}, {"hourly", p.Hourly}, {"daily", p.Daily}, {"weekly", p.Weekly}, {"monthly", p.Monthly}, {"yearly", p.Yearly}}
}

type namedDuration struct {
	name string
	d    Duration
}

func (p Policy) withins() []namedDuration {
	return []namedDuration{{"within", p.Within}, {"hourly within", p.WithinHourly}, {"daily within", p.WithinDaily},
		{"weekly within", p.WithinWeekly}, {"monthly within", p.WithinMonthly}, {"yearly within", p.WithinYearly}}
}

// String describes p for people, e.g. "keep 7 daily, 4 weekly, all within
// 30d, daily within 1y, tags [nightly]"; an empty policy is "keep all (no
// policy)".
func (p Policy) String() string {
	var parts []string
	for _, c := range p.counts() {
		switch {
		case c.n == Unlimited:
			parts = append(parts, "all "+c.name)
		case c.n > 0:
			parts = append(parts, strconv.Itoa(c.n)+" "+c.name)
		}
	}
	for _, w := range p.withins() {
		switch {
		case w.d.IsZero():
		case w.name == "within":
			parts = append(parts, "all within "+w.d.String())
		default:
			parts = append(parts, w.name+" "+w.d.String())
		}
	}
	if len(p.Tags) > 0 {
		groups := make([]string, len(p.Tags))
		for i, g := range p.Tags {
			groups[i] = "[" + strings.Join(g, ",") + "]"
		}
		parts = append(parts, "tags "+strings.Join(groups, " or "))
	}
	if len(parts) == 0 {
		return "keep all (no policy)"
	}
	return "keep " + strings.Join(parts, ", ")
}
