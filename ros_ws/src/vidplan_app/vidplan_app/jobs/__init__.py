"""Jobs the CLI runs that combine the library with the simulator or the nodes: simulated episode generation
(``generate``) and the closed-loop evaluation (``closed_loop``). Import submodules explicitly."""
