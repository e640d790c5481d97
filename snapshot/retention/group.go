package retention

import (
	"fmt"
	"slices"
	"strings"
)

// Grouping says which snapshot fields split snapshots into groups that a
// policy is applied to separately. The zero Grouping puts every snapshot
// into one group.
type Grouping struct {
	Host, Paths, Tags, Kind bool
}

// DefaultGrouping groups by host and paths, so that each backup source has
// its own history.
var DefaultGrouping = Grouping{Host: true, Paths: true}

// ParseGrouping parses a comma-separated list of "host", "paths", "tags"
// and "kind" (in any order; "" means one group for all snapshots).
func ParseGrouping(s string) (Grouping, error) {
	var g Grouping
	for _, f := range strings.Split(s, ",") {
		switch strings.TrimSpace(f) {
		case "":
		case "host":
			g.Host = true
		case "paths":
			g.Paths = true
		case "tags":
			g.Tags = true
		case "kind":
			g.Kind = true
		default:
			return Grouping{}, fmt.Errorf("retention: unknown grouping %q: want host, paths, tags or kind", f)
		}
	}
	return g, nil
}

// String returns g in the form ParseGrouping reads ("host,paths"; "" for
// one group).
func (g Grouping) String() string {
	var parts []string
	for _, f := range []struct {
		on   bool
		name string
	}{{g.Host, "host"}, {g.Paths, "paths"}, {g.Tags, "tags"}, {g.Kind, "kind"}} {
		if f.on {
			parts = append(parts, f.name)
		}
	}
	return strings.Join(parts, ",")
}

// Key identifies a group: the values of the fields it is grouped by, with
// Paths and Tags sorted. Fields not grouped by are left empty; By says
// which are set.
type Key struct {
	By    Grouping
	Host  string
	Paths []string
	Tags  []string
	Kind  string
}

// String describes k for people, e.g. "host alpha, paths [/etc /home]";
// a Key of the zero Grouping is "all snapshots".
func (k Key) String() string {
	var parts []string
	if k.By.Host {
		parts = append(parts, fmt.Sprintf("host %q", k.Host))
	}
	if k.By.Paths {
		parts = append(parts, fmt.Sprintf("paths [%s]", strings.Join(k.Paths, " ")))
	}
	if k.By.Tags {
		parts = append(parts, fmt.Sprintf("tags [%s]", strings.Join(k.Tags, ",")))
	}
	if k.By.Kind {
		parts = append(parts, "kind "+k.Kind)
	}
	if len(parts) == 0 {
		return "all snapshots"
	}
	return strings.Join(parts, ", ")
}

// id returns an unambiguous string form of k, used to find and order groups.
func (k Key) id() string {
	// NUL and \x01 cannot appear in host names, paths or tags that imago
	// writes; they only separate fields and list elements.
	return k.Host + "\x00" + strings.Join(k.Paths, "\x01") + "\x00" + strings.Join(k.Tags, "\x01") + "\x00" + k.Kind
}

// Group is the snapshots that share one Key.
type Group struct {
	Key   Key
	Items []Item
}

// GroupBy splits items into groups by g. Groups are ordered by key (host,
// then paths, tags and kind); the items of a group keep their input order.
func GroupBy(items []Item, g Grouping) []Group {
	index := map[string]int{}
	var groups []Group
	for _, it := range items {
		k := Key{By: g}
		if g.Host {
			k.Host = it.Host
		}
		if g.Paths {
			k.Paths = sortedCopy(it.Paths)
		}
		if g.Tags {
			k.Tags = sortedCopy(it.Tags)
		}
		if g.Kind {
			k.Kind = it.Kind
		}
		id := k.id()
		i, ok := index[id]
		if !ok {
			i = len(groups)
			index[id] = i
			groups = append(groups, Group{Key: k})
		}
		groups[i].Items = append(groups[i].Items, it)
	}
	slices.SortFunc(groups, func(a, b Group) int { return strings.Compare(a.Key.id(), b.Key.id()) })
	return groups
}

// sortedCopy returns a sorted copy of s without duplicates; nil for none.
func sortedCopy(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	c := slices.Clone(s)
	slices.Sort(c)
	return slices.Compact(c)
}
