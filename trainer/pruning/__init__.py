"""Pure tensor functions of pruning: masks and their enforcement (masks), exact-count pruning (rules),
unit (neuron/filter) pruning and costs (structured), Zhou et al.'s criteria (criteria), and the
pruning-at-initialisation scores (at_init). Nothing here trains a network or touches a run directory."""
