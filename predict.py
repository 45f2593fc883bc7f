"""Label a file with a saved model: classes, tags and entities, or sentence embeddings (.npy).

    python predict.py --model_dir checkpoint --input_file texts.txt --output_file labels.txt [--return_probs]

The same command installed: `bertorch-predict ...`; the library: `from bertorch.predict import Predictor`.
"""
if __name__ != "__main__":
    # Imported, not run: from the folder above a checkout named bertorch/, an uninstalled `bertorch` is that
    # checkout seen as a namespace package, and `bertorch.predict` is this file, not bertorch/predict.py.
    # Importing that module from here would import this file again, half-initialised.
    raise ImportError("`bertorch` here is a checkout folder, not the installed package (this is its predict.py "
                      "script): run `pip install -e .` in the checkout, or work from the checkout's root")

from bertorch.predict import main  # noqa: E402

main()
