package horde

// WaitFetches waits for the fetches c runs in the background now, so that a
// test can look at their result without sleeping.
func WaitFetches(c *Client) { c.flights.wait() }
