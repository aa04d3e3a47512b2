"""Model, maths and training code of the semantic dual-encoder classifier, plus the stage entry points."""
