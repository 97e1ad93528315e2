"""Other ways to run the worker. `faust`: the worker as a faust-streaming application
(`STREAM_ENGINE=faust`), and its embedding API; needs the `faust` extra. Nothing here is
imported by the native worker."""
