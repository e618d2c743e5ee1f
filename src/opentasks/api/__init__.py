"""Wire edges: gRPC servicers, proto <-> domain conversion, error mapping."""
