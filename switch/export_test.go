package vswitch

// ExpireFDB deletes the entries that have aged out and returns how many it
// deleted, as the switch does by itself periodically; tests call it so as
// not to wait for the sweep.
func (s *Switch) ExpireFDB() int { return s.fdb.sweep(s.now()) }
