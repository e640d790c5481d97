package main

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// progressState is one reading of a long-running operation's counters.
type progressState struct {
	FilesDone  int64
	FilesTotal int64 // 0 while unknown
	BytesDone  int64
	BytesTotal int64 // 0 while unknown
	Current    string
	Extra      string // short extra text for the terminal line (e.g. "12 MiB new")
}

// progressStatus is the JSON status line printed with --json.
type progressStatus struct {
	MessageType      string  `json:"message_type"`
	SecondsElapsed   float64 `json:"seconds_elapsed"`
	SecondsRemaining float64 `json:"seconds_remaining,omitempty"`
	PercentDone      float64 `json:"percent_done"`
	TotalFiles       int64   `json:"total_files,omitempty"`
	FilesDone        int64   `json:"files_done"`
	TotalBytes       int64   `json:"total_bytes,omitempty"`
	BytesDone        int64   `json:"bytes_done"`
	BytesPerSecond   float64 `json:"bytes_per_second"`
	CurrentFile      string  `json:"current_file,omitempty"`
}

// progress polls a counter function and shows it: a single refreshed line
// on a terminal (rate and ETA), or JSON status lines with --json. It prints
// nothing when stderr is not a terminal and --json is off, or with --quiet.
type progress struct {
	g     *globalOptions
	poll  func() progressState
	start time.Time
	tty   bool

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func (g *globalOptions) startProgress(poll func() progressState) *progress {
	p := &progress{g: g, poll: poll, start: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	p.tty = !g.json && !g.quiet && term.IsTerminal(int(os.Stderr.Fd())) && g.stderr == os.Stderr
	if !p.tty && !g.json {
		close(p.done)
		return p
	}
	interval := time.Second
	if p.tty {
		interval = 250 * time.Millisecond
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-p.stop:
				if p.tty {
					fmt.Fprint(p.g.stderr, "\r\033[K")
				}
				return
			case <-t.C:
				p.show()
			}
		}
	}()
	return p
}

// Stop ends the display and clears the terminal line.
func (p *progress) Stop() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
}

func (p *progress) show() {
	s := p.poll()
	el := time.Since(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(s.BytesDone) / el
	}
	pct, eta := 0.0, 0.0
	if s.BytesTotal > 0 {
		pct = 100 * float64(s.BytesDone) / float64(s.BytesTotal)
		if pct > 100 {
			pct = 100
		}
		if rate > 0 && s.BytesDone < s.BytesTotal {
			eta = float64(s.BytesTotal-s.BytesDone) / rate
		}
	}
	if p.g.json {
		_ = p.g.printJSON(progressStatus{
			MessageType: "status", SecondsElapsed: el, SecondsRemaining: eta, PercentDone: pct / 100,
			TotalFiles: s.FilesTotal, FilesDone: s.FilesDone, TotalBytes: s.BytesTotal, BytesDone: s.BytesDone,
			BytesPerSecond: rate, CurrentFile: s.Current,
		})
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[%s]", formatDuration(el))
	if s.BytesTotal > 0 {
		fmt.Fprintf(&b, " %5.1f%%", pct)
	}
	fmt.Fprintf(&b, " %d", s.FilesDone)
	if s.FilesTotal > 0 {
		fmt.Fprintf(&b, "/%d", s.FilesTotal)
	}
	fmt.Fprintf(&b, " files %s", formatBytes(s.BytesDone))
	if s.BytesTotal > 0 {
		fmt.Fprintf(&b, "/%s", formatBytes(s.BytesTotal))
	}
	fmt.Fprintf(&b, " %s/s", formatBytes(int64(rate)))
	if eta > 0 {
		fmt.Fprintf(&b, " ETA %s", formatDuration(eta))
	}
	if s.Extra != "" {
		fmt.Fprintf(&b, " %s", s.Extra)
	}
	line := b.String()
	width := 80
	if w, _, err := term.GetSize(int(os.Stderr.Fd())); err == nil && w > 20 {
		width = w
	}
	if s.Current != "" && len(line)+3 < width {
		cur := s.Current
		if room := width - len(line) - 2; len(cur) > room {
			cur = "…" + cur[len(cur)-room+1:]
		}
		line += "  " + cur
	}
	if len(line) > width {
		line = line[:width]
	}
	fmt.Fprintf(p.g.stderr, "\r\033[K%s", line)
}

func formatDuration(sec float64) string {
	d := int64(sec + 0.5)
	h, m, s := d/3600, d/60%60, d%60
	if h > 0 {
		return fmt.Sprintf("%d:%02d:%02d", h, m, s)
	}
	return fmt.Sprintf("%d:%02d", m, s)
}

func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range []string{"KiB", "MiB", "GiB", "TiB", "PiB"} {
		f /= unit
		if f < unit {
			return fmt.Sprintf("%.1f %s", f, u)
		}
	}
	return fmt.Sprintf("%.1f EiB", f/unit)
}
