// Package procout collects the output of the child processes the suites
// start, safely from the goroutines exec copies it on.
package procout

import (
	"bytes"
	"sync"
)

// tailBytes is what Tail keeps: enough for a panic or a race report's head.
const tailBytes = 4 << 10

// Buffer is an io.Writer that keeps everything written, for concurrent
// writers and readers.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Len is the number of bytes written so far.
func (s *Buffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

// Tail returns the last 4 KiB written.
func (s *Buffer) Tail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.b.Bytes()
	if len(b) > tailBytes {
		b = b[len(b)-tailBytes:]
	}
	return string(b)
}
