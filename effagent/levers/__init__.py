"""One module per lever. A lever turns a Decision into what the call carries; it never decides."""
