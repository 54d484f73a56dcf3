package rendezvous

// FlushDirectories sends the coalesced directory deltas now, as the next
// tick of the directory loop would, so that tests of coalescing need no
// timing.
func (s *Server) FlushDirectories() { s.flushDirectories() }
