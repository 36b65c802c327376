from glob import glob

from setuptools import find_packages, setup

PACKAGE_NAME = "dp_policy"

setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (f"share/{PACKAGE_NAME}", ["package.xml"]),
        # Training configs and data specs: `ros2 run dp_policy train --config train_pusht_image`.
        (f"share/{PACKAGE_NAME}/config", sorted(glob("config/*.yaml"))),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="Diffusion Policy ROS maintainers",
    maintainer_email="maintainers@example.org",
    description=(
        "The diffusion policy without ROS: models, noise schedules, normalizer, datasets, "
        "training, checkpoints, the receding-horizon runtime and offline evaluation."
    ),
    license="Apache-2.0",
    extras_require={"test": ["pytest"]},
    entry_points={
        "console_scripts": ["train = dp_policy.train:main", "eval = dp_policy.eval:main"]
    },
)
