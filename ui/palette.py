"""Colours and marker shapes shared by every plot, so a class looks the same on every page.

Classes use Paul Tol's colour-blind-safe "muted" scheme plus dark grey, and each class also has its
own marker shape, so no plot relies on colour alone. The query is Okabe-Ito orange.
"""

CLASS_COLOURS = ("#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE",
                 "#882255", "#44AA99", "#999933", "#AA4499", "#555555")
CLASS_SYMBOLS = ("circle", "square", "diamond", "cross", "x",
                 "triangle-up", "triangle-down", "star", "hexagon", "pentagon")
QUERY_COLOUR = "#E69F00"
