package relay

import "sync"

// budget accounts the bytes of part memory reserved by consumer requests.
// Reservations are all-or-nothing and never wait: a request that does not
// fit is refused, so memory stays bounded however many consumers come.
type budget struct {
	limit int64

	mu   sync.Mutex // guards used
	used int64
}

func (b *budget) reserve(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
}

func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// bufPool recycles part data buffers in power-of-two size classes from
// 4 KiB up, so a small frame does not pin a large buffer.
type bufPool struct {
	classes []sync.Pool // class i holds buffers of cap 4 KiB << i
}

const minBufShift = 12

func newBufPool(max int) *bufPool {
	n := 1
	for (1 << (minBufShift + n - 1)) < max {
		n++
	}
	return &bufPool{classes: make([]sync.Pool, n)}
}

func (p *bufPool) class(n int) int {
	c := 0
	for (1 << (minBufShift + c)) < n {
		c++
	}
	return c
}

// get returns a buffer of length n.
func (p *bufPool) get(n int) []byte {
	c := p.class(n)
	if c >= len(p.classes) {
		return make([]byte, n)
	}
	if v := p.classes[c].Get(); v != nil {
		return (*v.(*[]byte))[:n]
	}
	return make([]byte, n, 1<<(minBufShift+c))
}

// put recycles b; b must not be used afterwards.
func (p *bufPool) put(b []byte) {
	c := p.class(cap(b))
	if c >= len(p.classes) || cap(b) != 1<<(minBufShift+c) {
		return
	}
	b = b[:0]
	p.classes[c].Put(&b)
}
