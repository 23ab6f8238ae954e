"""Analytics over usage: rollup queries, the activity feed, exports and insights."""
