"""Processing elements: the bit-serial mixed-datatype PE and its baseline PEs."""
