package wechattest

import (
	"sync"
	"time"
)

// Clock is a manual clock, safe for concurrent use, for WithClock and for
// the code under test: tests move it forward instead of sleeping, so that a
// two-hour expiry takes no time at all.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock reading start. A zero start reads a fixed,
// arbitrary moment (2025-01-01 12:00 UTC), so that results do not depend on
// the day the tests run.
func NewClock(start time.Time) *Clock {
	if start.IsZero() {
		start = time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	}
	return &Clock{t: start}
}

// Now returns the clock's time; pass clock.Now to WithClock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d (backward if d is negative) and
// returns the new time.
func (c *Clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}
