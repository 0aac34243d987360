"""Show the guide's broken Keras half next to linfit's, on the same data.

    python scripts/guide_keras_half.py

The guide's MyModelKeras keeps plain tf.Variables, which Keras 3 does not
track: `fit` trains nothing. linfit refuses that model; its LinearModel
trains, and matches the hand-written loop.
"""

import warnings

from linfit.runtime import quiet_tensorflow

tf = quiet_tensorflow()  # TensorFlow without its C++ start-up lines

import keras  # noqa: E402

import linfit  # noqa: E402


class MyModelKeras(keras.Model):
    """The guide's class, verbatim."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.w = tf.Variable(5.0)
        self.b = tf.Variable(0.0)

    def call(self, x):
        return self.w * x + self.b


def main():
    data = linfit.synthetic_line()
    guide_model = MyModelKeras()
    guide_model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1),
                        loss=keras.losses.MeanSquaredError())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        guide = guide_model.fit(data.x, data.y, epochs=10, batch_size=1000, verbose=0)
    print("The guide's MyModelKeras with fit: loss per epoch",
          [round(v, 4) for v in guide.history["loss"]])
    print("  Keras warned:", sorted({str(w.message) for w in caught}) or "nothing")
    try:
        linfit.Trainer(MyModelKeras())
    except linfit.ModelError as error:
        print("linfit.Trainer(MyModelKeras()) refuses it:\n ", error)
    history = linfit.Trainer(linfit.LinearModel()).fit(data.x, data.y, epochs=10, loop="keras")
    print("linfit.LinearModel with fit: loss per epoch", [round(v, 4) for v in history.loss])


if __name__ == "__main__":
    main()
