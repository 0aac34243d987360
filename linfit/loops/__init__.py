"""The two training loops: a hand-written GradientTape loop and Keras's fit."""
