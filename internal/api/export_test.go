package api

import "time"

// SetReadTimeout shortens s's bound on reading a request, for tests.
func SetReadTimeout(s *Server, d time.Duration) { s.readTimeout = d }
